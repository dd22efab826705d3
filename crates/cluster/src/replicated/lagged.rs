//! The lagged site's hold: an operator stops its applies (`HoldApply`) to keep the
//! state from before a corruption, and releases them (`ReleaseApply`); and the apply
//! delay and hold as the site's status reports them.
//!
//! The delay itself is applied by the state machine (`raft/apply_delay.rs`); this
//! module only answers the operator. It must never hold a site that is not lagged,
//! nor hold without naming the operator.

use super::Replicated;
use crate::raft::apply_delay::ApplyHold;
use crate::status::ApplyDelayStatus;

impl Replicated {
    /// On a lagged site: stop applying, durably, and say at which index it stopped.
    pub(super) async fn hold_apply(&self, by: String) -> Result<ApplyHold, String> {
        let by = by.trim().to_string();
        if by.is_empty() {
            return Err("a hold names the operator who asks for it (--by)".into());
        }
        let delay = self.apply_delay.as_ref().ok_or_else(|| self.not_lagged())?;
        let state_machine = self.state_machine.clone();
        let hold = delay
            .hold(by, move || state_machine.applied_index().ok().flatten())
            .await
            .map_err(|e| format!("recording the hold: {e}"))?;
        Ok(hold)
    }

    /// On a lagged site: resume applying.
    pub(super) async fn release_apply(&self) -> Result<Option<ApplyHold>, String> {
        let delay = self.apply_delay.as_ref().ok_or_else(|| self.not_lagged())?;
        let lifted = delay.release().await.map_err(|e| format!("removing the hold: {e}"))?;
        Ok(lifted)
    }

    fn not_lagged(&self) -> String {
        format!("{} is a {} site; only a lagged site delays or holds its applies", self.site, self.role.name())
    }

    /// The apply delay and hold of a lagged site, for its status.
    pub(super) fn apply_delay_status(
        &self,
        last_log_index: Option<u64>,
        applied_index: Option<u64>,
    ) -> Option<ApplyDelayStatus> {
        self.apply_delay.as_ref().map(|delay| ApplyDelayStatus {
            delay_secs: delay.delay().as_secs(),
            pending_entries: last_log_index.unwrap_or(0).saturating_sub(applied_index.unwrap_or(0)),
            hold: delay.current_hold(),
        })
    }
}
