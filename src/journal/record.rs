//! Journal records and their on-disk form: one line each,
//! `<crc32 as 8 hex digits> <json>\n`. The checksum covers the JSON bytes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::RpcError;
use crate::snapshot::Step;

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The `snapshot.create` result.
    Ok(Value),
    /// The error it answered with.
    Error(RpcError),
}

/// One journal record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A `snapshot.create` job was accepted (before anything is touched).
    Request {
        /// The job.
        job_id: String,
        /// The client's idempotency key, if any.
        request_id: Option<String>,
        /// The request's params, as received.
        params: Value,
        /// The domain's UUID.
        domain_uuid: String,
        /// This daemon's librados address, to fence it if it dies.
        #[serde(default)]
        client_addr: Option<String>,
        /// Unix seconds.
        at: f64,
    },
    /// A workflow step, written before it acts.
    Step {
        /// The job.
        job_id: String,
        /// The step.
        step: Step,
    },
    /// The job is over: nothing of it is left to undo.
    End {
        /// The job.
        job_id: String,
        /// The client's idempotency key, if any (kept for retries).
        request_id: Option<String>,
        /// The request's params (a retry must match them).
        params: Value,
        /// Domain as requested.
        domain: String,
        /// Image as requested.
        image: String,
        /// Unix seconds.
        at: f64,
        /// What the job answered.
        outcome: Outcome,
        /// Unix seconds it started (absent in journals of 0.1.0 before it).
        #[serde(default)]
        started: Option<f64>,
        /// Its last phase (absent likewise).
        #[serde(default)]
        phase: Option<crate::snapshot::Phase>,
    },
    /// A thaw guard was armed on a domain: its guest may be frozen until
    /// an [`Record::Unguard`] for it. Outlives the job's end.
    Guard {
        /// The job whose freeze is not confirmed undone.
        job_id: String,
        /// The domain.
        domain_uuid: String,
        /// Unix seconds of the freeze attempt.
        since: u64,
        /// Why the thaw was not confirmed.
        reason: String,
        /// Whether the guest may be frozen (journals before pauses
        /// existed: always).
        #[serde(default = "always")]
        thaw: bool,
        /// Whether the vCPUs may be paused.
        #[serde(default)]
        resume: bool,
    },
    /// The guard on a domain was cleared: confirmed thawed, or gone.
    Unguard {
        /// The job that armed it.
        job_id: String,
        /// The domain.
        domain_uuid: String,
    },
}

fn always() -> bool {
    true
}

impl Record {
    /// The job a record belongs to.
    pub fn job_id(&self) -> &str {
        match self {
            Record::Request { job_id, .. }
            | Record::Step { job_id, .. }
            | Record::End { job_id, .. }
            | Record::Guard { job_id, .. }
            | Record::Unguard { job_id, .. } => job_id,
        }
    }

    /// The record as one checksummed line.
    pub fn to_line(&self) -> Result<String, serde_json::Error> {
        let json = serde_json::to_string(self)?;
        Ok(format!("{:08x} {json}\n", crc32(json.as_bytes())))
    }

    /// Parse one line (without its `\n`); `None` if torn or corrupt.
    pub fn from_line(line: &[u8]) -> Option<Record> {
        let text = std::str::from_utf8(line).ok()?;
        let (sum, json) = text.split_once(' ')?;
        let sum = u32::from_str_radix(sum, 16).ok()?;
        (sum == crc32(json.as_bytes()))
            .then(|| serde_json::from_str(json).ok())
            .flatten()
    }
}

/// CRC-32 (IEEE 802.3, reflected), bit by bit: records are small and few.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn lines_round_trip_and_damage_is_detected() {
        let rec = Record::Step {
            job_id: "j".into(),
            step: Step::Freeze,
        };
        let line = rec.to_line().expect("encode");
        let body = line.trim_end_matches('\n').as_bytes();
        assert_eq!(Record::from_line(body), Some(rec));
        let mut flipped = body.to_vec();
        let last = flipped.len() - 3;
        flipped[last] ^= 1;
        assert_eq!(Record::from_line(&flipped), None);
        assert_eq!(Record::from_line(&body[..body.len() - 4]), None, "torn");
    }
}
