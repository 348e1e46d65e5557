//! `covidct runs sync`: delivers the tracking records that wait in the spool.

use anyhow::Result;
use covidct_tracking::sync_spool;

use crate::cli::SyncArgs;
use crate::exit::ExitStatus;

/// `covidct runs sync`: delivers the journals waiting in the spool; returns the exit status
/// ([`ExitStatus::Failure`] while records still wait).
pub fn sync(args: &SyncArgs) -> Result<ExitStatus> {
    let outcomes = sync_spool(&args.spool_dir)?;
    if outcomes.is_empty() {
        println!("nothing to deliver in {}", args.spool_dir.display());
        return Ok(ExitStatus::Success);
    }
    let mut waiting = false;
    for outcome in &outcomes {
        let run = outcome
            .run
            .as_ref()
            .map_or("(not created yet)", |r| r.run_id.as_str());
        println!(
            "{}  run {run}  delivered {}  pending {}{}",
            outcome.target,
            outcome.delivered,
            outcome.pending,
            outcome
                .error
                .as_ref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default()
        );
        waiting |= outcome.pending > 0;
    }
    Ok(if waiting {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}
