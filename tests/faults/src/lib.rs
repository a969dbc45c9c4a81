//! Integrity under faults (issue 22): what a run of the fault harness
//! records ([`history`]) and the pure checker that judges it against the
//! databases' final state ([`check`]). No I/O here: the harness gathers
//! the history and the final state, the checker only reads them, so every
//! rule is unit-tested on hand-made histories that must fail.
//!
//! The checker follows Jepsen's stance: an operation whose answer never
//! came (timeout, reset, 5xx) is *unknown*, neither a pass nor a failure;
//! it is resolved against the final state: it may or may not have taken
//! effect, but it cannot explain two bookings for one key.

pub mod check;
pub mod history;

pub use check::{Violation, check};
pub use history::{Claim, Final, FinalBooking, Op, Outcome, Request, Span, Told};
