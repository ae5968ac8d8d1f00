//! Start-up recovery: before READY=1, thaw every domain the journal records
//! as maybe frozen, and roll back or finish every unfinished job; sweep
//! temporary snapshots of ours that no journal knows. Built by the
//! crash-safety issue.
