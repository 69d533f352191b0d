//! The failures that still stand: the last error of each upload and of each directory's publisher that is being
//! retried, for `status` and for `fsync`. Each failure carries an epoch, so that a waiter hears only of failures
//! that happened after it began waiting (an older one may be about to pass on its retry).

use std::collections::HashMap;

#[derive(Default)]
pub(super) struct Failures {
    epoch: u64,
    /// By spool file id.
    uploads: HashMap<String, (u64, String)>,
    /// By directory key.
    publishes: HashMap<String, (u64, String)>,
}

impl Failures {
    /// The epoch of the newest failure: failures after this one have a greater epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn upload_failed(&mut self, spool_id: &str, why: String) {
        self.epoch += 1;
        self.uploads.insert(spool_id.to_owned(), (self.epoch, why));
    }

    /// The upload ended (done, or no longer needed): its failure no longer stands.
    pub fn upload_ended(&mut self, spool_id: &str) {
        self.uploads.remove(spool_id);
    }

    pub fn publish_failed(&mut self, key: &str, why: String) {
        self.epoch += 1;
        self.publishes.insert(key.to_owned(), (self.epoch, why));
    }

    pub fn publish_succeeded(&mut self, key: &str) {
        self.publishes.remove(key);
    }

    /// Why the upload of the spool file last failed, if that still stands.
    pub fn upload(&self, spool_id: &str) -> Option<&str> {
        self.uploads.get(spool_id).map(|(_, why)| why.as_str())
    }

    /// [`Failures::upload`], if it failed after epoch `since`.
    pub fn upload_since(&self, spool_id: &str, since: u64) -> Option<&str> {
        Self::after(self.uploads.get(spool_id), since)
    }

    pub fn publish(&self, key: &str) -> Option<&str> {
        self.publishes.get(key).map(|(_, why)| why.as_str())
    }

    pub fn publish_since(&self, key: &str, since: u64) -> Option<&str> {
        Self::after(self.publishes.get(key), since)
    }

    /// The newest failure that still stands.
    pub fn newest(&self) -> Option<&str> {
        self.uploads
            .values()
            .chain(self.publishes.values())
            .max_by_key(|(epoch, _)| *epoch)
            .map(|(_, why)| why.as_str())
    }

    fn after(failure: Option<&(u64, String)>, since: u64) -> Option<&str> {
        failure
            .filter(|(epoch, _)| *epoch > since)
            .map(|(_, why)| why.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_hears_only_of_failures_after_it_began() {
        let mut failures = Failures::default();
        failures.upload_failed("s1", "server full".into());
        let since = failures.epoch();
        assert_eq!(failures.upload("s1"), Some("server full"));
        assert_eq!(
            failures.upload_since("s1", since),
            None,
            "older than the wait"
        );
        failures.upload_failed("s1", "still full".into());
        assert_eq!(failures.upload_since("s1", since), Some("still full"));
        failures.publish_failed("d", "write conflict".into());
        assert_eq!(failures.publish_since("d", since), Some("write conflict"));
        assert_eq!(failures.newest(), Some("write conflict"));
        failures.publish_succeeded("d");
        assert_eq!(failures.publish("d"), None);
        assert_eq!(failures.newest(), Some("still full"));
        failures.upload_ended("s1");
        assert_eq!(failures.newest(), None);
        assert!(failures.epoch() > since, "the epoch never goes back");
    }
}
