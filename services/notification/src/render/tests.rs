#![allow(clippy::unwrap_used)]

use chrono::TimeZone;
use uuid::Uuid;

use super::*;
use crate::model::CustomerFacts;

fn booking(start: DateTime<Utc>, version: i64) -> BookingSnapshot {
    BookingSnapshot {
        id: Uuid::nil(),
        resource_id: Uuid::nil(),
        appointment_type_id: Uuid::nil(),
        start,
        end: start + chrono::Duration::minutes(30),
        status: "confirmed".into(),
        price_minor: 2500,
        currency: "EUR".into(),
        customer: Some(CustomerFacts {
            name: Some("Ada <script>".into()),
            email: Some("ada@example.test".into()),
            phone: Some("+4930123456".into()),
            locale: None,
        }),
        version,
    }
}

fn berlin() -> ResourceInfo {
    ResourceInfo {
        name: "Room 1".into(),
        time_zone: "Europe/Berlin".into(),
        owner_id: String::new(),
    }
}

fn rendered(kind: Kind, b: &BookingSnapshot) -> Rendered {
    let resource = berlin();
    let facts = Facts {
        booking: b,
        resource: Some(&resource),
        appointment_type: Some("Consultation"),
        amount_minor: Some(b.price_minor),
        currency: &b.currency,
        stamp: b.start,
    };
    let who = Identity {
        id_domain: "berth.test",
        organizer: "no-reply@berth.test",
    };
    render(&Templates::load(None).unwrap(), kind, &facts, &who).unwrap()
}

#[test]
fn times_follow_the_zone_across_a_dst_change() {
    // 09:00 UTC is 10:00 CET before Berlin's change (29 March 2026) and
    // 11:00 CEST after it.
    let before = rendered(
        Kind::Confirmation,
        &booking(Utc.with_ymd_and_hms(2026, 3, 28, 9, 0, 0).unwrap(), 1),
    );
    assert!(
        before
            .text
            .contains("Saturday 28 March 2026, 10:00–10:30 (Europe/Berlin, CET)"),
        "{}",
        before.text
    );
    let after = rendered(
        Kind::Confirmation,
        &booking(Utc.with_ymd_and_hms(2026, 3, 30, 9, 0, 0).unwrap(), 1),
    );
    assert!(
        after
            .text
            .contains("Monday 30 March 2026, 11:00–11:30 (Europe/Berlin, CEST)"),
        "{}",
        after.text
    );
    assert!(after.text.contains("Paid: 25.00 EUR"));
    assert_eq!(
        after.sms.as_deref(),
        Some("Confirmed: Consultation at Room 1, Mon 30 Mar, 11:00 (Europe/Berlin, CEST).")
    );
}

#[test]
fn texts_fit_one_message() {
    let b = booking(Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap(), 1);
    for kind in [
        Kind::Confirmation,
        Kind::Reschedule,
        Kind::Cancellation,
        Kind::Reminder,
    ] {
        let sms = rendered(kind, &b).sms.unwrap();
        // One GSM-7 segment, with names of ordinary length.
        assert!(sms.chars().count() <= 160, "{kind:?}: {sms}");
        assert!(!sms.contains('\n'), "{kind:?}: {sms}");
    }
}

#[test]
fn dates_are_in_the_customers_language() {
    let mut b = booking(Utc.with_ymd_and_hms(2026, 3, 30, 9, 0, 0).unwrap(), 1);
    let set = |b: &mut BookingSnapshot, locale: &str| {
        if let Some(c) = b.customer.as_mut() {
            c.locale = Some(locale.into());
        }
    };
    set(&mut b, "de-DE");
    let r = rendered(Kind::Confirmation, &b);
    assert!(
        r.text
            .contains("Montag 30 März 2026, 11:00–11:30 (Europe/Berlin, CEST)"),
        "{}",
        r.text
    );
    assert!(r.sms.unwrap().contains("Mo 30 Mär, 11:00"));
    set(&mut b, "fr");
    assert!(
        rendered(Kind::Confirmation, &b)
            .text
            .contains("lundi 30 mars 2026")
    );
    // One chrono has no names for: English, not an error.
    set(&mut b, "xx-YY");
    assert!(
        rendered(Kind::Confirmation, &b)
            .text
            .contains("Monday 30 March 2026")
    );
}

#[test]
fn html_escapes_what_customers_typed() {
    let r = rendered(
        Kind::Confirmation,
        &booking(Utc.with_ymd_and_hms(2026, 5, 4, 9, 0, 0).unwrap(), 1),
    );
    assert!(r.html.contains("Ada &lt;script&gt;"), "{}", r.html);
    assert!(r.text.contains("Ada <script>"));
}

#[test]
fn every_template_renders_and_invites_carry_uid_sequence_and_method() {
    let b = booking(Utc.with_ymd_and_hms(2026, 5, 4, 9, 0, 0).unwrap(), 7);
    for kind in [
        Kind::Confirmation,
        Kind::Reschedule,
        Kind::Cancellation,
        Kind::Refund,
        Kind::PaymentFailed,
        Kind::Reminder,
    ] {
        let r = rendered(kind, &b);
        assert!(!r.text.is_empty() && r.html.contains("</html>"), "{kind:?}");
        assert_eq!(r.invite.is_some(), kind.has_invite(), "{kind:?}");
        assert_eq!(r.sms.is_some(), kind.is_texted(), "{kind:?}");
    }
    let (method, ics) = rendered(Kind::Reschedule, &b).invite.unwrap();
    assert_eq!(method, "REQUEST");
    for line in [
        "METHOD:REQUEST",
        "UID:booking-00000000-0000-0000-0000-000000000000@berth.test",
        "SEQUENCE:7",
        "DTSTART:20260504T090000Z",
        "DTEND:20260504T093000Z",
        "STATUS:CONFIRMED",
    ] {
        assert!(ics.contains(line), "{line} missing:\n{ics}");
    }
    assert_eq!(ics.matches("PRODID:").count(), 1, "{ics}");
    assert!(ics.contains("VERSION:2.0"), "{ics}");
    let (method, ics) = rendered(Kind::Cancellation, &b).invite.unwrap();
    assert_eq!(method, "CANCEL");
    assert!(
        ics.contains("METHOD:CANCEL") && ics.contains("STATUS:CANCELLED"),
        "{ics}"
    );
}

#[test]
fn money_knows_zero_decimal_currencies() {
    assert_eq!(money(2500, "eur"), "25.00 EUR");
    assert_eq!(money(5, "USD"), "0.05 USD");
    assert_eq!(money(2500, "JPY"), "2500 JPY");
}

#[test]
fn a_templates_folder_replaces_built_ins_and_refuses_what_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("confirmation.sms"),
        "Booked {{ appointment_type }}, {{ when_short }}. Reply STOP to stop.",
    )
    .unwrap();
    // A mounted ConfigMap's bookkeeping is not a template.
    std::fs::create_dir(dir.path().join("..2026_12_04")).unwrap();
    let templates = Templates::load(Some(dir.path())).unwrap();
    let b = booking(Utc.with_ymd_and_hms(2026, 3, 30, 9, 0, 0).unwrap(), 1);
    let resource = berlin();
    let facts = Facts {
        booking: &b,
        resource: Some(&resource),
        appointment_type: Some("Consultation"),
        amount_minor: None,
        currency: "EUR",
        stamp: b.start,
    };
    let who = Identity {
        id_domain: "berth.test",
        organizer: "no-reply@berth.test",
    };
    let r = render(&templates, Kind::Confirmation, &facts, &who).unwrap();
    assert_eq!(
        r.sms.as_deref(),
        Some("Booked Consultation, Mon 30 Mar, 11:00. Reply STOP to stop.")
    );
    assert!(r.text.contains("confirmed"), "the rest stays built in");

    for (file, body, says) in [
        ("confirmation.txt", "{% if %}", "confirmation.txt"),
        ("confirmation.text", "hi", "not a template name"),
        ("reminder.txt", "{{ when | nosuchfilter }}", "reminder.txt"),
    ] {
        let bad = tempfile::tempdir().unwrap();
        std::fs::write(bad.path().join(file), body).unwrap();
        let error = Templates::load(Some(bad.path())).unwrap_err();
        assert!(error.contains(says), "{file}: {error}");
    }
}

/// The ConfigMap in `examples/full/templates.yaml` is accepted as it is
/// (its `data` block scalars written out as the kubelet mounts them).
#[test]
fn the_example_templates_config_map_loads() {
    let yaml = include_str!("../../../../examples/full/templates.yaml");
    let dir = tempfile::tempdir().unwrap();
    let mut current: Option<(String, String)> = None;
    let mut files = Vec::new();
    for line in yaml.lines().skip_while(|l| *l != "data:").skip(1) {
        if let Some(key) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(": |")) {
            files.extend(current.take());
            current = Some((key.to_owned(), String::new()));
        } else if let (Some((_, body)), Some(text)) = (current.as_mut(), line.strip_prefix("    "))
        {
            body.push_str(text);
            body.push('\n');
        }
    }
    files.extend(current);
    assert!(!files.is_empty());
    for (name, body) in &files {
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    Templates::load(Some(dir.path())).unwrap();
}
