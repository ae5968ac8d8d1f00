//! The intent journal: an fsync'd, checksummed record written before every
//! side effect (freeze, temporary snapshot, clone, flatten, final snapshot)
//! so that a daemon killed at any point can thaw the guest and finish or roll
//! back the job on its next start. Built by the crash-safety issue.
