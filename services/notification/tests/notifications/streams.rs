//! In a cluster the services meet only on Redis: notifications must read
//! the streams where booking and payment write.

use berth_booking::BookingConfig;
use berth_notification::NotificationConfig;
use berth_payment::PaymentConfig;

#[test]
fn notifications_read_the_streams_booking_and_payment_write() {
    let notifications = NotificationConfig::default();
    assert_eq!(
        notifications.booking_stream_key,
        BookingConfig::default().stream_key
    );
    assert_eq!(
        notifications.payment_stream_key,
        PaymentConfig::new("sk_test_x", vec!["whsec_x".into()]).stream_key
    );
}
