//! Messages from templates (minijinja; `templates/`, embedded at build
//! time) and the invite (`icalendar`).
//!
//! Times are shown in the resource's zone and labelled with it
//! (`Europe/Berlin, CEST`), computed by chrono-tz for the instant itself,
//! so the offset is right on either side of a DST change. The invite keeps
//! UTC instants (`DTSTART:…Z`): unambiguous, and every calendar shows them
//! in its owner's zone.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use icalendar::{Calendar, Component, Event, EventLike, EventStatus, Property};
use serde::Serialize;

use crate::directory::ResourceInfo;
use crate::model::{BookingSnapshot, Kind};

mod templates;
pub use templates::Templates;

/// A rendered message.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
    /// iTIP method and calendar text.
    pub invite: Option<(String, String)>,
    /// The text message, for the kinds that are texted.
    pub sms: Option<String>,
}

/// What a template sees.
#[derive(Debug, Serialize)]
struct Context {
    customer_name: Option<String>,
    resource: String,
    appointment_type: String,
    /// e.g. `Monday 30 March 2026, 10:00–10:30`.
    when: String,
    /// e.g. `Mon 30 Mar, 10:00` (texts).
    when_short: String,
    /// e.g. `Europe/Berlin, CEST`.
    zone: String,
    booking_id: String,
    /// e.g. `25.00 EUR`, for priced bookings and refunds.
    amount: Option<String>,
}

/// Everything a message says about its booking.
pub struct Facts<'a> {
    pub booking: &'a BookingSnapshot,
    pub resource: Option<&'a ResourceInfo>,
    pub appointment_type: Option<&'a str>,
    /// Shown as the amount: the price, or what was refunded.
    pub amount_minor: Option<i64>,
    pub currency: &'a str,
    pub stamp: DateTime<Utc>,
}

/// Where invites come from and how their ids are made.
pub struct Identity<'a> {
    pub id_domain: &'a str,
    pub organizer: &'a str,
}

pub fn render(
    templates: &Templates,
    kind: Kind,
    facts: &Facts<'_>,
    who: &Identity<'_>,
) -> Result<Rendered, String> {
    let zone: Tz = facts
        .resource
        .and_then(|r| r.time_zone.parse().ok())
        .unwrap_or(Tz::UTC);
    let resource = facts
        .resource
        .map_or_else(|| "your appointment".to_owned(), |r| r.name.clone());
    let appointment_type = facts.appointment_type.unwrap_or("Appointment").to_owned();
    let locale = chrono_locale(
        facts
            .booking
            .customer
            .as_ref()
            .and_then(|c| c.locale.as_deref()),
    );
    let (when, label) = local_span(facts.booking.start, facts.booking.end, zone, locale);
    let context = Context {
        customer_name: facts.booking.customer.as_ref().and_then(|c| c.name.clone()),
        resource: resource.clone(),
        appointment_type: appointment_type.clone(),
        when: when.clone(),
        when_short: shown(
            &facts.booking.start.with_timezone(&zone),
            "%a %-d %b, %H:%M",
            locale,
        ),
        zone: label,
        booking_id: facts.booking.id.to_string(),
        amount: facts
            .amount_minor
            .filter(|a| *a > 0)
            .map(|a| money(a, facts.currency)),
    };
    let subject = match kind {
        Kind::Confirmation => format!("Confirmed: {appointment_type} at {resource}, {when}"),
        Kind::Reschedule => format!("Moved: {appointment_type} at {resource}, now {when}"),
        Kind::Cancellation => format!("Cancelled: {appointment_type} at {resource}, {when}"),
        Kind::Refund => format!("Refund for {appointment_type} at {resource}"),
        Kind::PaymentFailed => format!("Not booked: {appointment_type} at {resource}"),
        Kind::Reminder => format!("Reminder: {appointment_type} at {resource}, {when}"),
    };
    let template = |ext: &str| templates.render(&format!("{}.{ext}", kind.as_str()), &context);
    let invite = kind.has_invite().then(|| {
        invite(
            kind,
            facts,
            who,
            &format!("{appointment_type} at {resource}"),
        )
    });
    Ok(Rendered {
        subject,
        text: template("txt")?,
        html: template("html")?,
        invite,
        sms: if kind.is_texted() {
            Some(template("sms")?.trim_end().to_owned())
        } else {
            None
        },
    })
}

/// The chrono locale of a customer's `de-DE` (or `fr`: `fr_FR`); `None`
/// (English) for one chrono has no names for.
fn chrono_locale(tag: Option<&str>) -> Option<chrono::Locale> {
    let tag = tag?;
    let (language, region) = tag
        .split_once('-')
        .map_or((tag, None), |(l, r)| (l, Some(r)));
    let exact = region.map(|r| format!("{language}_{r}"));
    let usual = format!("{language}_{}", language.to_ascii_uppercase());
    exact
        .into_iter()
        .chain([usual])
        .find_map(|name| chrono::Locale::try_from(name.as_str()).ok())
}

/// `t` formatted with day and month names in `locale` (English if none).
fn shown(t: &DateTime<Tz>, format: &str, locale: Option<chrono::Locale>) -> String {
    match locale {
        Some(locale) => t.format_localized(format, locale).to_string(),
        None => t.format(format).to_string(),
    }
}

/// `start`–`end` in `zone`, and the zone's label at `start`.
fn local_span(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    zone: Tz,
    locale: Option<chrono::Locale>,
) -> (String, String) {
    let start = start.with_timezone(&zone);
    let end = end.with_timezone(&zone);
    let end_format = if start.date_naive() == end.date_naive() {
        "%H:%M"
    } else {
        "%A %-d %B %Y, %H:%M"
    };
    let when = format!(
        "{}–{}",
        shown(&start, "%A %-d %B %Y, %H:%M", locale),
        shown(&end, end_format, locale)
    );
    let abbreviation = start.format("%Z").to_string();
    let label = if abbreviation == zone.name() {
        zone.name().to_owned()
    } else {
        format!("{}, {abbreviation}", zone.name())
    };
    (when, label)
}

/// Currencies without minor units (ISO 4217 exponent 0) among those Stripe takes.
const ZERO_DECIMAL: [&str; 15] = [
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF",
];

fn money(minor: i64, currency: &str) -> String {
    let currency = currency.to_ascii_uppercase();
    if ZERO_DECIMAL.contains(&currency.as_str()) {
        format!("{minor} {currency}")
    } else {
        format!("{}.{:02} {currency}", minor / 100, (minor % 100).abs())
    }
}

/// The booking's calendar event: one `UID` per booking, `SEQUENCE` its
/// version (raised by every change), `METHOD:CANCEL` when it is off.
fn invite(kind: Kind, facts: &Facts<'_>, who: &Identity<'_>, summary: &str) -> (String, String) {
    let booking = facts.booking;
    let cancelled = kind == Kind::Cancellation;
    let method = if cancelled { "CANCEL" } else { "REQUEST" };
    // A version is positive and far below u32::MAX for any real booking.
    let sequence = u32::try_from(booking.version.max(0)).unwrap_or(u32::MAX);
    let mut attendee = Property::new(
        "ATTENDEE",
        format!("mailto:{}", booking.email().unwrap_or_default()),
    );
    attendee
        .add_parameter("ROLE", "REQ-PARTICIPANT")
        .add_parameter("PARTSTAT", "ACCEPTED");
    if let Some(name) = booking.customer.as_ref().and_then(|c| c.name.as_deref()) {
        attendee.add_parameter("CN", name);
    }
    let mut organizer = Property::new("ORGANIZER", format!("mailto:{}", who.organizer));
    organizer.add_parameter("CN", "Berth");
    let event = Event::new()
        .uid(&uid(booking, who.id_domain))
        .sequence(sequence)
        .timestamp(facts.stamp)
        .starts(booking.start)
        .ends(booking.end)
        .summary(summary)
        .status(if cancelled {
            EventStatus::Cancelled
        } else {
            EventStatus::Confirmed
        })
        .append_property(organizer.done())
        .append_property(attendee.done())
        .done();
    // `empty`: `new` brings its own PRODID, and a calendar has exactly one.
    let mut calendar = Calendar::empty();
    calendar
        .append_property(Property::new("VERSION", "2.0"))
        .append_property(Property::new("PRODID", "-//Berth//Notifications//EN"))
        .append_property(Property::new("CALSCALE", "GREGORIAN"))
        .append_property(Property::new("METHOD", method))
        .push(event);
    (method.to_owned(), calendar.done().to_string())
}

/// Stable per booking, so every update replaces the same calendar event.
pub fn uid(booking: &BookingSnapshot, id_domain: &str) -> String {
    format!("booking-{}@{id_domain}", booking.id)
}

#[cfg(test)]
mod tests;
