//! Who may do what, in one place. Reads (resources, types, schedules,
//! overrides, slots) are public: customers browse before they book. Writes
//! need `admin`, or `staff` owning the resource. Calendars reveal private
//! feed URLs and busy times, so only those who may manage the resource see
//! them. Pure functions; the service methods call them before writing.

use berth_runtime::auth::Principal;

use crate::error::AvailabilityError;

pub(crate) const STAFF: &str = "staff";
pub(crate) const ADMIN: &str = "admin";

const NOT_YOURS: &str = "you do not manage this resource";

fn forbidden(detail: &str) -> AvailabilityError {
    AvailabilityError::Forbidden(detail.to_owned())
}

/// Whether `p` may change a resource owned by `owner` and what hangs off it.
pub(crate) fn may_manage(p: &Principal, owner: &str) -> bool {
    p.has_role(ADMIN) || (p.has_role(STAFF) && !owner.is_empty() && p.subject == owner)
}

/// `Ok` when `p` may manage the resource, else 403.
pub(crate) fn manage(p: &Principal, owner: &str) -> Result<(), AvailabilityError> {
    if may_manage(p, owner) {
        Ok(())
    } else {
        Err(forbidden(NOT_YOURS))
    }
}

/// The owner of a resource `p` creates: the caller, or (admins only)
/// whoever the body names.
pub(crate) fn new_owner(
    p: &Principal,
    requested: Option<&str>,
) -> Result<String, AvailabilityError> {
    if !p.has_role(ADMIN) && !p.has_role(STAFF) {
        return Err(forbidden(
            "creating a resource requires the `staff` or `admin` role",
        ));
    }
    match requested {
        Some(owner) if owner != p.subject && !p.has_role(ADMIN) => Err(forbidden(
            "only an admin may create a resource for someone else",
        )),
        Some(owner) => Ok(owner.to_owned()),
        None => Ok(p.subject.clone()),
    }
}

/// A patch may name the current owner; only an admin may name another.
pub(crate) fn change_owner(
    p: &Principal,
    current: &str,
    requested: Option<&str>,
) -> Result<(), AvailabilityError> {
    match requested {
        Some(owner) if owner != current && !p.has_role(ADMIN) => {
            Err(forbidden("only an admin may change a resource's owner"))
        }
        _ => Ok(()),
    }
}

/// Calendars are visible to those who may manage the resource; to anyone
/// else they do not exist (the caller answers 404, as for an unknown id).
pub(crate) fn may_see_calendars(p: Option<&Principal>, owner: &str) -> bool {
    p.is_some_and(|p| may_manage(p, owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(subject: &str, roles: &[&str]) -> Principal {
        Principal {
            subject: subject.to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            phone_number: None,
        }
    }

    fn is_forbidden<T>(r: Result<T, AvailabilityError>) -> bool {
        matches!(r, Err(AvailabilityError::Forbidden(_)))
    }

    #[test]
    fn staff_manage_their_own_resources_only() {
        let a = who("a", &[STAFF]);
        assert!(manage(&a, "a").is_ok());
        assert!(is_forbidden(manage(&a, "b")));
        assert!(
            is_forbidden(manage(&a, "")),
            "unowned rows belong to admins"
        );
        assert!(is_forbidden(manage(&who("a", &["customer"]), "a")));
        assert!(is_forbidden(manage(&who("a", &[]), "a")));
        assert!(manage(&who("root", &[ADMIN]), "a").is_ok());
        assert!(manage(&who("root", &[ADMIN]), "").is_ok());
    }

    #[test]
    fn creating_needs_staff_and_admins_may_create_for_others() {
        let a = who("a", &[STAFF]);
        assert_eq!(new_owner(&a, None).ok().as_deref(), Some("a"));
        assert_eq!(new_owner(&a, Some("a")).ok().as_deref(), Some("a"));
        assert!(is_forbidden(new_owner(&a, Some("b"))));
        assert!(is_forbidden(new_owner(&who("c", &["customer"]), None)));
        let root = who("root", &[ADMIN]);
        assert_eq!(new_owner(&root, Some("b")).ok().as_deref(), Some("b"));
        assert_eq!(new_owner(&root, None).ok().as_deref(), Some("root"));
    }

    #[test]
    fn only_admins_change_owners() {
        let a = who("a", &[STAFF]);
        assert!(change_owner(&a, "a", None).is_ok());
        assert!(change_owner(&a, "a", Some("a")).is_ok());
        assert!(is_forbidden(change_owner(&a, "a", Some("b"))));
        assert!(change_owner(&who("root", &[ADMIN]), "a", Some("b")).is_ok());
    }

    #[test]
    fn calendars_are_hidden_from_everyone_else() {
        assert!(may_see_calendars(Some(&who("a", &[STAFF])), "a"));
        assert!(may_see_calendars(Some(&who("x", &[ADMIN])), "a"));
        assert!(!may_see_calendars(Some(&who("b", &[STAFF])), "a"));
        assert!(!may_see_calendars(Some(&who("a", &["customer"])), "a"));
        assert!(!may_see_calendars(None, "a"));
    }
}
