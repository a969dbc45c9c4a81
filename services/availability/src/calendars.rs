//! External calendars whose busy times block slots: uploaded ICS text, or a
//! feed URL fetched over HTTP(S) and refreshed every `refresh_interval_secs`.
//!
//! Parsed busy times are stored (table `busy_times`) so the slots endpoint
//! and the ledger read them with SQL, under the same transaction as claims.
//! Refreshing never blocks a claim: stale feeds are refreshed before slots
//! are computed and by the sweeper; a failed refresh keeps the previous
//! busy times and records the error on the calendar.

use berth_runtime::auth::Principal;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::Availability;
use crate::access;
use crate::error::AvailabilityError;
use crate::ics;
use crate::ledger::now;
use crate::model::{Calendar, NewCalendar};
use crate::rules::zone;
use crate::store::CalendarRow;
use berth_runtime::egress::{self, Refused};

/// Largest feed accepted.
pub const MAX_FEED_BYTES: usize = 4 * 1024 * 1024;
const DEFAULT_REFRESH_SECS: u32 = 15 * 60;
const MIN_REFRESH_SECS: u32 = 60;
const MAX_REFRESH_SECS: u32 = 7 * 24 * 3600;
/// Why a feed could not be read.
enum FetchError {
    /// The SSRF guard refused the destination (also on a redirect).
    Refused(Refused),
    Failed(String),
}

impl FetchError {
    fn from_reqwest(error: &reqwest::Error) -> Self {
        match egress::refusal(error) {
            Some(refused) => FetchError::Refused(refused),
            None => FetchError::Failed(format!("fetch failed: {error}")),
        }
    }

    fn message(self) -> String {
        match self {
            FetchError::Refused(refused) => refusal_message(&refused),
            FetchError::Failed(message) => message,
        }
    }

    /// As an answer to the request that gave the URL: a refused address is
    /// a 400, anything else a 422 on `url`.
    fn into_error(self) -> AvailabilityError {
        match self {
            FetchError::Refused(refused) => refused_error(refused),
            FetchError::Failed(message) => AvailabilityError::invalid("url", message),
        }
    }
}

/// "calendar URL points to a private or local address".
fn refusal_message(refused: &Refused) -> String {
    match refused {
        Refused::Private => format!("calendar {refused}"),
        Refused::Scheme(_) => refused.to_string(),
    }
}

fn refused_error(refused: Refused) -> AvailabilityError {
    match refused {
        Refused::Private => AvailabilityError::BadRequest(refusal_message(&refused)),
        Refused::Scheme(_) => AvailabilityError::invalid("url", refusal_message(&refused)),
    }
}

fn valid_url(raw: &str) -> Result<reqwest::Url, AvailabilityError> {
    let url = reqwest::Url::parse(raw.trim())
        .map_err(|e| AvailabilityError::invalid("url", format!("not a URL: {e}")))?;
    egress::check_url(&url, true).map_err(refused_error)?;
    Ok(url)
}

impl Availability {
    /// Downloads a feed, at most [`MAX_FEED_BYTES`], through the SSRF guard.
    async fn fetch(&self, url: &str) -> Result<String, FetchError> {
        let url =
            reqwest::Url::parse(url).map_err(|e| FetchError::Failed(format!("not a URL: {e}")))?;
        let client = self
            .inner
            .egress
            .client_for(&url)
            .map_err(FetchError::Refused)?;
        let mut response = client
            .get(url)
            .send()
            .await
            .map_err(|e| FetchError::from_reqwest(&e))?;
        if !response.status().is_success() {
            return Err(FetchError::Failed(format!(
                "feed answered HTTP {}",
                response.status()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::from_reqwest(&e))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_FEED_BYTES {
                return Err(FetchError::Failed(format!(
                    "feed is larger than {MAX_FEED_BYTES} bytes"
                )));
            }
        }
        String::from_utf8(body).map_err(|_| FetchError::Failed("feed is not UTF-8 text".to_owned()))
    }

    /// Adds a calendar. A URL is fetched at once, so a wrong URL is a 422
    /// (a private address a 400) now rather than an empty calendar later.
    /// Authorised first: nobody else can make the service fetch a URL.
    pub(crate) async fn add_calendar(
        &self,
        p: &Principal,
        resource: Uuid,
        new: NewCalendar,
    ) -> Result<Calendar, AvailabilityError> {
        let row = zone(&self.authorize(p, resource).await?)?;
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
        let (url, text, field) = match (new.url, new.ics) {
            (Some(url), None) => {
                let url = valid_url(&url)?;
                egress::check_destination(&url, self.inner.egress.allow_private())
                    .await
                    .map_err(refused_error)?;
                let text = self
                    .fetch(url.as_str())
                    .await
                    .map_err(FetchError::into_error)?;
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

    /// Only for those who may manage the resource; anyone else gets the
    /// same 404 as for an unknown resource.
    pub(crate) async fn list_calendars(
        &self,
        p: Option<&Principal>,
        resource: Uuid,
    ) -> Result<Vec<Calendar>, AvailabilityError> {
        let mut tx = self.inner.store.read().await?;
        match tx.get_resource(resource).await? {
            Some(r) if access::may_see_calendars(p, &r.owner_id) => {}
            _ => return Err(AvailabilityError::not_found("resource", resource)),
        }
        Ok(tx
            .list_calendars(resource)
            .await?
            .iter()
            .map(Calendar::from)
            .collect())
    }

    /// Hidden (404) like [`Self::list_calendars`].
    pub(crate) async fn get_calendar(
        &self,
        p: Option<&Principal>,
        id: Uuid,
    ) -> Result<Calendar, AvailabilityError> {
        let mut tx = self.inner.store.read().await?;
        let missing = || AvailabilityError::not_found("calendar", id);
        let cal = tx.get_calendar(id).await?.ok_or_else(missing)?;
        match tx.get_resource(cal.resource_id).await? {
            Some(r) if access::may_see_calendars(p, &r.owner_id) => Ok(Calendar::from(&cal)),
            _ => Err(missing()),
        }
    }

    /// Hidden (404) like [`Self::get_calendar`] from those who may not see
    /// it; seeing a calendar and managing its resource are the same right.
    pub(crate) async fn delete_calendar(
        &self,
        p: &Principal,
        id: Uuid,
    ) -> Result<(), AvailabilityError> {
        self.get_calendar(Some(p), id).await?;
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
                (Some(url), _) => self.fetch(url).await.map_err(FetchError::message),
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
