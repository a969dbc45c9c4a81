//! `GET /v1/resources/{id}/slots`: the slot engine over stored rules, live
//! claims (lapsed holds excluded) and calendar busy times.

use berth_slots::{MAX_WINDOW, SlotError, Window, compute_slots};
use chrono::{SecondsFormat, TimeDelta, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

use crate::Availability;
use crate::error::AvailabilityError;
use crate::ledger::now;
use crate::model::{SlotView, SlotsPage, SlotsQuery, in_supported_range};
use crate::rules::{engine_claim, resource_and_type, schedule, widen, zone};

/// Window used when the request gives no `to`.
const DEFAULT_WINDOW: TimeDelta = TimeDelta::days(7);

impl Availability {
    pub(crate) async fn slots(
        &self,
        resource: Uuid,
        q: SlotsQuery,
    ) -> Result<SlotsPage, AvailabilityError> {
        let render: Option<Tz> = q
            .tz
            .as_deref()
            .map(|name| {
                name.parse::<Tz>().map_err(|_| {
                    AvailabilityError::BadRequest(format!("tz: {name:?} is not an IANA time zone"))
                })
            })
            .transpose()?;
        let from = q.from.unwrap_or_else(Utc::now);
        let to =
            q.to.unwrap_or_else(|| from.checked_add_signed(DEFAULT_WINDOW).unwrap_or(from));
        if !in_supported_range(from) || !in_supported_range(to) {
            return Err(AvailabilityError::BadRequest(
                "from/to: years must be between 1 and 9999".to_owned(),
            ));
        }
        let window = Window { from, to };
        window.ensure_max_len(MAX_WINDOW).map_err(|e| match e {
            SlotError::InvertedWindow { .. } => {
                AvailabilityError::BadRequest(format!("`to` must not be before `from`: {e}"))
            }
            other => AvailabilityError::BadRequest(format!("from/to: {other}")),
        })?;

        if let Err(error) = self.refresh_feeds(Some(resource)).await {
            tracing::warn!(%resource, %error, "calendar refresh before slots failed");
        }
        let now = now();
        let mut tx = self.inner.store.read().await?;
        let (row, ty) = resource_and_type(&mut tx, resource, q.appointment_type).await?;
        let (wide_from, wide_to) = widen(from, to);
        let claims: Vec<_> = tx
            .live_claims(resource, wide_from, wide_to, now)
            .await?
            .iter()
            .map(engine_claim)
            .collect();
        let busy = tx.busy_times(resource, wide_from, wide_to).await?;
        let schedule = schedule(&mut tx, &row, from, to).await?;
        drop(tx);

        let slots = compute_slots(&schedule, &ty.rules(), &claims, &busy, window, now)
            .map_err(|e| AvailabilityError::Corrupt(format!("stored rules rejected: {e}")))?;
        let tz = render.unwrap_or(zone(&row)?);
        let show = |t: chrono::DateTime<Utc>| {
            t.with_timezone(&tz)
                .to_rfc3339_opts(SecondsFormat::Secs, false)
        };
        Ok(SlotsPage {
            resource_id: resource,
            appointment_type_id: ty.id,
            time_zone: tz.name().to_owned(),
            from,
            to,
            slots: slots
                .into_iter()
                .map(|s| SlotView {
                    start: show(s.start),
                    end: show(s.end),
                    start_utc: s.start,
                    end_utc: s.end,
                    remaining: s.remaining,
                })
                .collect(),
        })
    }
}
