//! Who may see which booking. Admins see all; a customer sees the bookings
//! they made; staff see the bookings on resources they manage. The same rule
//! is applied in Rust to one booking ([`Caller::can_see`]) and in SQL to lists
//! ([`Visibility`]), and a booking the caller cannot see answers exactly like
//! an unknown id, so its existence is not revealed.

use berth_runtime::auth::Principal;

use crate::model::BookingRecord;

pub(crate) const CUSTOMER: &str = "customer";
pub(crate) const STAFF: &str = "staff";
pub(crate) const ADMIN: &str = "admin";

/// The authenticated caller, reduced to what the rules need.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub subject: String,
    admin: bool,
    staff: bool,
    customer: bool,
}

/// Which bookings a list may return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Visibility {
    All,
    /// `customer_id = subject`, or (when `staff`) `resource_owner_id = subject`.
    /// An empty subject sees nothing.
    Only {
        subject: String,
        staff: bool,
    },
}

impl Caller {
    pub fn new(principal: &Principal) -> Self {
        Self {
            subject: principal.subject.clone(),
            admin: principal.has_role(ADMIN),
            staff: principal.has_role(STAFF),
            customer: principal.has_role(CUSTOMER),
        }
    }

    /// Booking needs one of the three roles and a subject to own the booking.
    pub fn may_create(&self) -> bool {
        !self.subject.is_empty() && (self.customer || self.staff || self.admin)
    }

    pub fn visibility(&self) -> Visibility {
        if self.admin {
            Visibility::All
        } else {
            Visibility::Only {
                subject: self.subject.clone(),
                staff: self.staff,
            }
        }
    }

    pub fn can_see(&self, booking: &BookingRecord) -> bool {
        match self.visibility() {
            Visibility::All => true,
            Visibility::Only { subject, staff } => {
                let is =
                    |id: &Option<String>| !subject.is_empty() && id.as_deref() == Some(&subject);
                is(&booking.customer_id) || (staff && is(&booking.resource_owner_id))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(subject: &str, roles: &[&str]) -> Caller {
        Caller::new(&Principal {
            subject: subject.into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            phone_number: None,
        })
    }

    #[test]
    fn roles_decide_creation_and_visibility() {
        assert!(caller("a", &["customer"]).may_create());
        assert!(caller("a", &["staff"]).may_create());
        assert!(caller("a", &["admin"]).may_create());
        assert!(!caller("a", &[]).may_create());
        assert!(!caller("a", &["auditor"]).may_create());
        assert!(!caller("", &["customer"]).may_create());
        assert_eq!(caller("a", &["admin"]).visibility(), Visibility::All);
        assert_eq!(
            caller("a", &["customer"]).visibility(),
            Visibility::Only {
                subject: "a".into(),
                staff: false
            }
        );
    }
}
