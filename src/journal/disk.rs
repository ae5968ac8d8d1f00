//! The journal's file-level I/O: reading back every intact record (a torn
//! tail dropped, damage anywhere else refused), writing one line, making a
//! directory entry durable.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use super::{io_err, JournalError, Record};

/// The pause point a test asked for; release builds have none.
#[cfg(feature = "test-hooks")]
pub(super) fn test_pause_point() -> Option<String> {
    std::env::var("RBDSNAPD_TEST_PAUSE_AT")
        .ok()
        .filter(|s| !s.is_empty())
}

#[cfg(not(feature = "test-hooks"))]
pub(super) fn test_pause_point() -> Option<String> {
    None
}

/// Every intact record and the length of the intact prefix.
pub(super) fn read(path: &Path) -> Result<(Vec<Record>, u64), JournalError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(io_err("open", path)(e)),
    };
    let mut reader = BufReader::new(file);
    let (mut records, mut good, mut line_no) = (Vec::new(), 0u64, 0usize);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(io_err("read", path))?;
        if n == 0 {
            return Ok((records, good));
        }
        line_no += 1;
        let complete = line.last() == Some(&b'\n');
        let body = if complete {
            &line[..line.len() - 1]
        } else {
            &line[..]
        };
        match Record::from_line(body) {
            Some(record) if complete => {
                records.push(record);
                good += n as u64;
            }
            _ => {
                // torn only if nothing intact follows
                let mut rest = Vec::new();
                std::io::Read::read_to_end(&mut reader, &mut rest).map_err(io_err("read", path))?;
                if rest.iter().all(u8::is_ascii_whitespace) {
                    return Ok((records, good));
                }
                return Err(JournalError::Corrupt {
                    path: path.to_path_buf(),
                    line: line_no,
                });
            }
        }
    }
}

/// Write one record's line; `short` (unit tests) writes half of it and
/// fails with ENOSPC, as a full disk can.
pub(super) fn write_line(file: &mut File, line: &str, short: bool) -> std::io::Result<()> {
    if short {
        file.write_all(&line.as_bytes()[..line.len() / 2])?;
        return Err(std::io::Error::from_raw_os_error(nix::libc::ENOSPC));
    }
    file.write_all(line.as_bytes())
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}
