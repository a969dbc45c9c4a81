//! Resources, appointment types, weekly schedules and date overrides.
//! Everything is validated before the first write, so bad input changes
//! nothing.

use berth_runtime::auth::Principal;
use berth_slots::{DateOverride, WeeklyHours};
use chrono::NaiveDate;
use sqlx::types::Json;
use uuid::Uuid;

use crate::Availability;
use crate::access;
use crate::error::AvailabilityError;
use crate::ledger::{Queue, lock, now};
use crate::model::{
    AppointmentType, AppointmentTypePatch, FIRST_DATE, LAST_DATE, NewAppointmentType, NewResource,
    Page, Resource, ResourcePatch, WeeklyBody, valid_date, valid_name, valid_owner, valid_zone,
    validate_schedule,
};
use crate::store::{ResourceRow, RowLock, TypeRow};

pub(crate) const MAX_PAGE: i64 = 500;

/// What a guarded delete found.
enum Deleted {
    Yes,
    Missing,
    HasLiveClaims,
}

impl Availability {
    pub(crate) async fn create_resource(
        &self,
        p: &Principal,
        new: NewResource,
    ) -> Result<Resource, AvailabilityError> {
        let owner_id = valid_owner(&access::new_owner(p, new.owner_id.as_deref())?)?;
        let name = valid_name(&new.name)?;
        let time_zone = valid_zone("time_zone", &new.time_zone)?;
        let now = now();
        let row = ResourceRow {
            id: Uuid::now_v7(),
            name,
            time_zone: time_zone.name().to_owned(),
            owner_id,
            weekly: Json(WeeklyHours::default()),
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.inner.store.write().await?;
        tx.insert_resource(&row).await?;
        tx.commit().await?;
        Ok(Resource::from(&row))
    }

    pub(crate) async fn list_resources(
        &self,
        owner: Option<&str>,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Page<Resource>, AvailabilityError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut tx = self.inner.store.read().await?;
        let rows = tx.list_resources(owner, after, limit).await?;
        let next_after = (rows.len() as i64 == limit)
            .then(|| rows.last().map(|r| r.id))
            .flatten();
        Ok(Page {
            items: rows.iter().map(Resource::from).collect(),
            next_after,
        })
    }

    async fn resource_row(&self, id: Uuid) -> Result<ResourceRow, AvailabilityError> {
        let mut tx = self.inner.store.read().await?;
        tx.get_resource(id)
            .await?
            .ok_or_else(|| AvailabilityError::not_found("resource", id))
    }

    pub(crate) async fn get_resource(&self, id: Uuid) -> Result<Resource, AvailabilityError> {
        Ok(Resource::from(&self.resource_row(id).await?))
    }

    /// The resource, if `p` may manage it (404 if missing, else 403). Runs
    /// before any write. Owner changes are admin-only and rare; a write that
    /// races one is judged by the owner it saw at its start.
    pub(crate) async fn authorize(
        &self,
        p: &Principal,
        id: Uuid,
    ) -> Result<ResourceRow, AvailabilityError> {
        let row = self.resource_row(id).await?;
        access::manage(p, &row.owner_id)?;
        Ok(row)
    }

    /// A new zone re-reads every calendar of the resource: all-day and
    /// floating events are local times.
    pub(crate) async fn update_resource(
        &self,
        p: &Principal,
        id: Uuid,
        patch: ResourcePatch,
    ) -> Result<Resource, AvailabilityError> {
        // Checked under the row lock, on the row the update rewrites, so a
        // concurrent owner change cannot slip between check and write.
        let mut tx = self.inner.store.write().await?;
        if tx.lock_resource(id, None).await? == RowLock::Missing {
            return Err(AvailabilityError::not_found("resource", id));
        }
        let mut row = tx
            .get_resource(id)
            .await?
            .ok_or_else(|| AvailabilityError::not_found("resource", id))?;
        access::manage(p, &row.owner_id)?;
        access::change_owner(p, &row.owner_id, patch.owner_id.as_deref())?;
        let name = patch.name.as_deref().map(valid_name).transpose()?;
        let time_zone = patch
            .time_zone
            .as_deref()
            .map(|z| valid_zone("time_zone", z))
            .transpose()?;
        if let Some(owner) = patch.owner_id.as_deref() {
            row.owner_id = valid_owner(owner)?;
        }
        if let Some(name) = name {
            row.name = name;
        }
        if let Some(tz) = time_zone.filter(|tz| tz.name() != row.time_zone) {
            row.time_zone = tz.name().to_owned();
            for cal in tx.list_calendars(id).await? {
                if let Some(text) = &cal.ics {
                    let busy = crate::ics::busy_times(text, tz, now()).unwrap_or_default();
                    tx.replace_busy(cal.id, id, &busy).await?;
                }
            }
        }
        row.updated_at = now();
        tx.update_resource(&row).await?;
        tx.commit().await?;
        Ok(Resource::from(&row))
    }

    /// Refused (409) while the resource has live claims: deleting it would
    /// silently cancel bookings.
    pub(crate) async fn delete_resource(
        &self,
        p: &Principal,
        id: Uuid,
    ) -> Result<(), AvailabilityError> {
        self.authorize(p, id).await?;
        let outcome = self
            .serialised(id, Queue::RowOnly, |token| async move {
                let mut tx = self.inner.store.write().await?;
                match lock(&mut tx, id, token).await {
                    Err(crate::ledger::Failure::Ledger(berth_ledger::LedgerError::NotFound(_))) => {
                        return Ok(Deleted::Missing);
                    }
                    other => other?,
                }
                if tx.has_live_claims(id, None, now()).await? {
                    return Ok(Deleted::HasLiveClaims);
                }
                tx.delete_resource(id).await?;
                tx.commit().await?;
                Ok(Deleted::Yes)
            })
            .await?;
        deleted(outcome, "resource", id)
    }

    pub(crate) async fn create_type(
        &self,
        p: &Principal,
        resource: Uuid,
        new: NewAppointmentType,
    ) -> Result<AppointmentType, AvailabilityError> {
        self.authorize(p, resource).await?;
        let mut ty = AppointmentType::from_new(Uuid::now_v7(), resource, new, now());
        ty.validate()?;
        let mut tx = self.inner.store.write().await?;
        if tx.get_resource(resource).await?.is_none() {
            return Err(AvailabilityError::not_found("resource", resource));
        }
        tx.insert_type(&TypeRow::from(&ty)).await?;
        tx.commit().await?;
        Ok(ty)
    }

    pub(crate) async fn list_types(
        &self,
        resource: Uuid,
    ) -> Result<Vec<AppointmentType>, AvailabilityError> {
        let mut tx = self.inner.store.read().await?;
        if tx.get_resource(resource).await?.is_none() {
            return Err(AvailabilityError::not_found("resource", resource));
        }
        tx.list_types(resource)
            .await?
            .into_iter()
            .map(TryInto::try_into)
            .collect()
    }

    pub(crate) async fn get_type(&self, id: Uuid) -> Result<AppointmentType, AvailabilityError> {
        let mut tx = self.inner.store.read().await?;
        tx.get_type(id)
            .await?
            .ok_or_else(|| AvailabilityError::not_found("appointment type", id))?
            .try_into()
    }

    /// Existing claims keep the length, buffers, price and cancellation
    /// policy they were made with.
    pub(crate) async fn update_type(
        &self,
        p: &Principal,
        id: Uuid,
        patch: AppointmentTypePatch,
    ) -> Result<AppointmentType, AvailabilityError> {
        self.authorize(p, self.get_type(id).await?.resource_id)
            .await?;
        let mut tx = self.inner.store.write().await?;
        let mut ty: AppointmentType = tx
            .get_type(id)
            .await?
            .ok_or_else(|| AvailabilityError::not_found("appointment type", id))?
            .try_into()?;
        ty.apply(patch);
        ty.validate()?;
        ty.updated_at = now();
        tx.update_type(&TypeRow::from(&ty)).await?;
        tx.commit().await?;
        Ok(ty)
    }

    /// Refused (409) while claims of this type are live.
    pub(crate) async fn delete_type(
        &self,
        p: &Principal,
        id: Uuid,
    ) -> Result<(), AvailabilityError> {
        let resource = self.get_type(id).await?.resource_id;
        self.authorize(p, resource).await?;
        let outcome = self
            .serialised(resource, Queue::RowOnly, |token| async move {
                let mut tx = self.inner.store.write().await?;
                lock(&mut tx, resource, token).await?;
                if tx.has_live_claims(resource, Some(id), now()).await? {
                    return Ok(Deleted::HasLiveClaims);
                }
                let found = tx.delete_type(id).await?;
                tx.commit().await?;
                Ok(if found {
                    Deleted::Yes
                } else {
                    Deleted::Missing
                })
            })
            .await?;
        deleted(outcome, "appointment type", id)
    }

    pub(crate) async fn get_schedule(
        &self,
        resource: Uuid,
    ) -> Result<WeeklyHours, AvailabilityError> {
        Ok(self.resource_row(resource).await?.weekly.0)
    }

    pub(crate) async fn put_schedule(
        &self,
        p: &Principal,
        resource: Uuid,
        body: WeeklyBody,
    ) -> Result<WeeklyHours, AvailabilityError> {
        self.authorize(p, resource).await?;
        // Interval checks do not depend on the zone.
        let weekly = body.into_weekly(chrono_tz::UTC)?;
        let mut tx = self.inner.store.write().await?;
        if !tx.set_weekly(resource, &weekly, now()).await? {
            return Err(AvailabilityError::not_found("resource", resource));
        }
        tx.commit().await?;
        Ok(weekly)
    }

    pub(crate) async fn list_overrides(
        &self,
        resource: Uuid,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
    ) -> Result<Vec<DateOverride>, AvailabilityError> {
        let mut tx = self.inner.store.read().await?;
        if tx.get_resource(resource).await?.is_none() {
            return Err(AvailabilityError::not_found("resource", resource));
        }
        let from = from.unwrap_or(FIRST_DATE).clamp(FIRST_DATE, LAST_DATE);
        let to = to.unwrap_or(LAST_DATE).clamp(FIRST_DATE, LAST_DATE);
        Ok(tx.list_overrides(resource, from, to).await?)
    }

    pub(crate) async fn put_override(
        &self,
        p: &Principal,
        resource: Uuid,
        o: DateOverride,
    ) -> Result<DateOverride, AvailabilityError> {
        self.authorize(p, resource).await?;
        valid_date("date", o.date)?;
        // Interval checks do not depend on the zone.
        validate_schedule(
            chrono_tz::UTC,
            &WeeklyHours::default(),
            std::slice::from_ref(&o),
        )?;
        let mut tx = self.inner.store.write().await?;
        if tx.get_resource(resource).await?.is_none() {
            return Err(AvailabilityError::not_found("resource", resource));
        }
        tx.put_override(resource, o.date, &o.hours).await?;
        tx.commit().await?;
        Ok(o)
    }

    pub(crate) async fn delete_override(
        &self,
        p: &Principal,
        resource: Uuid,
        date: NaiveDate,
    ) -> Result<(), AvailabilityError> {
        self.authorize(p, resource).await?;
        let mut tx = self.inner.store.write().await?;
        if tx.get_resource(resource).await?.is_none() {
            return Err(AvailabilityError::not_found("resource", resource));
        }
        let in_range = (FIRST_DATE..=LAST_DATE).contains(&date);
        if !in_range || !tx.delete_override(resource, date).await? {
            return Err(AvailabilityError::NotFound(format!("override on {date}")));
        }
        tx.commit().await?;
        Ok(())
    }
}

fn deleted(outcome: Deleted, what: &str, id: Uuid) -> Result<(), AvailabilityError> {
    match outcome {
        Deleted::Yes => Ok(()),
        Deleted::Missing => Err(AvailabilityError::not_found(what, id)),
        Deleted::HasLiveClaims => Err(AvailabilityError::Conflict(format!(
            "{what} {id} has live claims; release them first"
        ))),
    }
}
