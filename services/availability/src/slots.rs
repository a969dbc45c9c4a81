//! `GET /v1/resources/{id}/slots`: the slot engine over stored rules, live
//! claims (lapsed holds excluded) and calendar busy times.

use berth_slots::{MAX_WINDOW, Schedule, SlotError, Window, compute_slots};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

use crate::Availability;
use crate::error::AvailabilityError;
use crate::ledger::now;
use crate::model::{AppointmentType, SlotView, SlotsPage, SlotsQuery, in_supported_range};
use crate::rules::{REACH, engine_claim, zone};
use crate::slot_inputs::widened;
use crate::store::WindowView;

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

        let view = self
            .slot_inputs(resource, q.appointment_type, (from, to))
            .await?;
        let now = now();
        let ty: AppointmentType = view
            .ty
            .clone()
            .ok_or_else(|| AvailabilityError::not_found("appointment type", q.appointment_type))?
            .try_into()?;
        let row = &view.resource;
        let claims: Vec<_> = view
            .claims
            .iter()
            .filter(|c| !c.lapsed(now))
            .map(engine_claim)
            .collect();
        let schedule = Schedule {
            time_zone: zone(row)?,
            weekly: row.weekly.0.clone(),
            overrides: view.overrides.clone(),
        };
        let busy = &view.busy;

        let slots = compute_slots(&schedule, &ty.rules(), &claims, busy, window, now)
            .map_err(|e| AvailabilityError::Corrupt(format!("stored rules rejected: {e}")))?;
        let tz = render.unwrap_or(zone(row)?);
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

    /// The view slots over `window` are computed on, with calendars that
    /// are due refreshed first: from the cache when the resource's counters
    /// say it is current (see the `slot_inputs` module), else read again.
    async fn slot_inputs(
        &self,
        resource: Uuid,
        appointment_type: Uuid,
        window: (DateTime<Utc>, DateTime<Utc>),
    ) -> Result<Arc<WindowView>, AvailabilityError> {
        let store = &self.inner.store;
        let versions = || async {
            store
                .slot_versions(resource)
                .await?
                .ok_or_else(|| AvailabilityError::not_found("resource", resource))
        };
        let mut current = versions().await?;
        if current.feeds_due {
            // A due calendar is refreshed first, so its busy times count.
            match self.refresh_feeds(Some(resource)).await {
                Ok(0) => {}
                Ok(_) => current = versions().await?,
                Err(error) => {
                    tracing::warn!(%resource, %error, "calendar refresh before slots failed");
                }
            }
        }
        let key = (resource, appointment_type);
        let Some(counters) = current.counters else {
            // No counters (SQLite): nothing to check a cached view against.
            return self.read_view(key, window).await.map(Arc::new);
        };
        let cache = &self.inner.slot_inputs;
        if let Some(view) = cache.get(key, counters, window) {
            return Ok(view);
        }
        let covers = widened(window);
        let view = Arc::new(self.read_view(key, covers).await?);
        if view.ty.is_some() {
            cache.put(key, covers, view.clone());
        }
        Ok(view)
    }

    async fn read_view(
        &self,
        (resource, appointment_type): (Uuid, Uuid),
        window: (DateTime<Utc>, DateTime<Utc>),
    ) -> Result<WindowView, AvailabilityError> {
        self.inner
            .store
            .window_view(resource, appointment_type, window, REACH)
            .await?
            .ok_or_else(|| AvailabilityError::not_found("resource", resource))
    }
}
