//! External calendars whose busy times block slots: uploaded ICS text, or a
//! feed URL fetched over HTTP(S) and refreshed every `refresh_interval_secs`.
//!
//! Parsed busy times are stored (table `busy_times`) so the slots endpoint
//! and the ledger read them with SQL, under the same transaction as claims.
//! Refreshing never blocks a claim: stale feeds are refreshed before slots
//! are computed and by the sweeper; a failed refresh keeps the previous
//! busy times and records the error on the calendar.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::Availability;
use crate::error::AvailabilityError;
use crate::ics;
use crate::ledger::now;
use crate::model::{Calendar, NewCalendar};
use crate::rules::zone;
use crate::store::CalendarRow;

/// Largest feed accepted.
pub const MAX_FEED_BYTES: usize = 4 * 1024 * 1024;
const DEFAULT_REFRESH_SECS: u32 = 15 * 60;
const MIN_REFRESH_SECS: u32 = 60;
const MAX_REFRESH_SECS: u32 = 7 * 24 * 3600;
/// A feed that does not answer in this time is treated as failed.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn http_client() -> Result<reqwest::Client, AvailabilityError> {
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::limited(5))
        .user_agent(concat!("berth-availability/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| AvailabilityError::Config(format!("HTTP client: {e}")))
}

fn valid_url(raw: &str) -> Result<reqwest::Url, AvailabilityError> {
    let url = reqwest::Url::parse(raw.trim())
        .map_err(|e| AvailabilityError::invalid("url", format!("not a URL: {e}")))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(AvailabilityError::invalid(
            "url",
            format!("scheme {other:?} is not supported; use http or https"),
        )),
    }
}

impl Availability {
    /// Downloads a feed, at most [`MAX_FEED_BYTES`].
    async fn fetch(&self, url: &str) -> Result<String, String> {
        let mut response = self
            .inner
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("fetch failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("feed answered HTTP {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("fetch failed: {e}"))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_FEED_BYTES {
                return Err(format!("feed is larger than {MAX_FEED_BYTES} bytes"));
            }
        }
        String::from_utf8(body).map_err(|_| "feed is not UTF-8 text".to_owned())
    }

    /// Adds a calendar. A URL is fetched at once, so a wrong URL is a 422
    /// now rather than a silently empty calendar later.
    pub(crate) async fn add_calendar(
        &self,
        resource: Uuid,
        new: NewCalendar,
    ) -> Result<Calendar, AvailabilityError> {
        let interval = new.refresh_interval_secs.unwrap_or(DEFAULT_REFRESH_SECS);
        if !(MIN_REFRESH_SECS..=MAX_REFRESH_SECS).contains(&interval) {
            return Err(AvailabilityError::invalid(
                "refresh_interval_secs",
                format!("must be between {MIN_REFRESH_SECS} and {MAX_REFRESH_SECS}"),
            ));
        }
        let name = new
            .name
            .as_deref()
            .map(crate::model::valid_name)
            .transpose()?;
        let row = self.read_resource_zone(resource).await?;
        let (url, text, field) = match (new.url, new.ics) {
            (Some(url), None) => {
                let url = valid_url(&url)?;
                let text = self
                    .fetch(url.as_str())
                    .await
                    .map_err(|e| AvailabilityError::invalid("url", e))?;
                (Some(url.to_string()), text, "url")
            }
            (None, Some(text)) => (None, text, "ics"),
            _ => {
                return Err(AvailabilityError::invalid(
                    "url",
                    "give exactly one of `url` (a feed to fetch) or `ics` (calendar text)",
                ));
            }
        };
        let busy =
            ics::busy_times(&text, row, now()).map_err(|e| AvailabilityError::invalid(field, e))?;
        let now = now();
        let cal = CalendarRow {
            id: Uuid::now_v7(),
            resource_id: resource,
            name,
            fetched_at: Some(now),
            url,
            refresh_interval_secs: interval.into(),
            ics: Some(text),
            last_error: None,
            created_at: now,
        };
        let mut tx = self.inner.store.write().await?;
        if tx.get_resource(resource).await?.is_none() {
            return Err(AvailabilityError::not_found("resource", resource));
        }
        tx.insert_calendar(&cal).await?;
        tx.replace_busy(cal.id, resource, &busy).await?;
        tx.commit().await?;
        Ok(Calendar::from(&cal))
    }

    async fn read_resource_zone(&self, resource: Uuid) -> Result<chrono_tz::Tz, AvailabilityError> {
        let mut tx = self.inner.store.read().await?;
        let row = tx
            .get_resource(resource)
            .await?
            .ok_or_else(|| AvailabilityError::not_found("resource", resource))?;
        zone(&row)
    }

    pub(crate) async fn list_calendars(
        &self,
        resource: Uuid,
    ) -> Result<Vec<Calendar>, AvailabilityError> {
        let mut tx = self.inner.store.read().await?;
        if tx.get_resource(resource).await?.is_none() {
            return Err(AvailabilityError::not_found("resource", resource));
        }
        Ok(tx
            .list_calendars(resource)
            .await?
            .iter()
            .map(Calendar::from)
            .collect())
    }

    pub(crate) async fn get_calendar(&self, id: Uuid) -> Result<Calendar, AvailabilityError> {
        let mut tx = self.inner.store.read().await?;
        let cal = tx
            .get_calendar(id)
            .await?
            .ok_or_else(|| AvailabilityError::not_found("calendar", id))?;
        Ok(Calendar::from(&cal))
    }

    pub(crate) async fn delete_calendar(&self, id: Uuid) -> Result<(), AvailabilityError> {
        let mut tx = self.inner.store.write().await?;
        if !tx.delete_calendar(id).await? {
            return Err(AvailabilityError::not_found("calendar", id));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Refreshes the calendars that are due (of one resource, or all):
    /// feeds are fetched again, uploads re-read. Failures are recorded on
    /// the calendar and logged, never returned: stale busy times are better
    /// than no slots at all.
    pub(crate) async fn refresh_feeds(
        &self,
        resource: Option<Uuid>,
    ) -> Result<usize, AvailabilityError> {
        let due = {
            let mut tx = self.inner.store.read().await?;
            tx.stale_calendars(resource).await?
        };
        let mut refreshed = 0;
        for cal in due {
            let text = match (&cal.url, &cal.ics) {
                (Some(url), _) => self.fetch(url).await,
                (None, Some(text)) => Ok(text.clone()),
                (None, None) => continue,
            };
            let zone = {
                let mut tx = self.inner.store.read().await?;
                match tx.get_resource(cal.resource_id).await? {
                    Some(r) => zone(&r)?,
                    None => continue,
                }
            };
            let parsed =
                text.and_then(|text| ics::busy_times(&text, zone, now()).map(|busy| (text, busy)));
            self.record_refresh(&cal, parsed, now()).await?;
            refreshed += 1;
        }
        Ok(refreshed)
    }

    async fn record_refresh(
        &self,
        cal: &CalendarRow,
        parsed: Result<(String, Vec<berth_slots::BusyInterval>), String>,
        at: DateTime<Utc>,
    ) -> Result<(), AvailabilityError> {
        let mut tx = self.inner.store.write().await?;
        if tx.get_calendar(cal.id).await?.is_none() {
            return Ok(()); // Deleted meanwhile.
        }
        match parsed {
            Ok((text, busy)) => {
                tx.replace_busy(cal.id, cal.resource_id, &busy).await?;
                tx.record_fetch(cal.id, Some(&text), at, None).await?;
            }
            Err(error) => {
                tracing::warn!(calendar = %cal.id, url = cal.url.as_deref().unwrap_or(""), %error, "calendar refresh failed; keeping previous busy times");
                tx.record_fetch(cal.id, None, at, Some(&error)).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
