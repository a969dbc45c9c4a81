//! What the benchmarks tell the notification service about resources and
//! appointment types: fixed answers in process (availability is not what
//! they measure).

use berth_notification::Fetch;

pub struct Directory;

#[async_trait::async_trait]
impl Fetch for Directory {
    async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        let body = if path.starts_with("/v1/resources/") {
            r#"{"name":"Room 1","time_zone":"Europe/Berlin","owner_id":""}"#
        } else {
            r#"{"name":"Consultation"}"#
        };
        Ok(Some(body.as_bytes().to_vec()))
    }
}
