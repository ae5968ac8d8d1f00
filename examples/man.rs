//! Writes the man pages the Debian package ships, from the definitions the
//! programs themselves use: rbdsnapd(8) and rbdsnapctl(8) (with one page per
//! rbdsnapctl command) from the clap definitions behind `--help`, and
//! rbdsnapd.toml(5) from the commented example configuration that is
//! installed as /etc/rbdsnapd/rbdsnapd.toml.
//!
//! Usage: `cargo run --release --example man -- OUTDIR` (dev/package runs it).

#[path = "../src/bin/rbdsnapctl/cli.rs"]
#[allow(dead_code)]
mod ctl_cli;

use std::fs;
use std::io;
use std::path::Path;

use clap::CommandFactory;

const EXAMPLE_CONFIG: &str = include_str!("../dist/rbdsnapd.toml");

fn main() -> io::Result<()> {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: man OUTDIR");
        std::process::exit(2);
    };
    let out = Path::new(&out);
    fs::create_dir_all(out)?;
    let daemon = rbdsnapd::cli::Args::command().name("rbdsnapd");
    write_page(out, daemon, "rbdsnapd")?;
    let client = ctl_cli::Args::command().name("rbdsnapctl");
    for sub in client.get_subcommands() {
        // clap names are &'static str; this program runs once and exits
        let name: &'static str = format!("rbdsnapctl-{}", sub.get_name()).leak();
        write_page(out, sub.clone().name(name), name)?;
    }
    write_page(out, client, "rbdsnapctl")?;
    fs::write(out.join("rbdsnapd.toml.5"), config_page(EXAMPLE_CONFIG))
}

fn write_page(out: &Path, cmd: clap::Command, name: &str) -> io::Result<()> {
    let cmd = cmd.version(env!("CARGO_PKG_VERSION"));
    let man = clap_mangen::Man::new(cmd)
        .section("8")
        .manual("rbdsnapd")
        .source(format!("rbdsnapd {}", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    man.render(&mut page)?;
    fs::write(out.join(format!("{name}.8")), page)
}

/// rbdsnapd.toml(5): the example file's opening comment is the description;
/// its `# --- X ---` banners and `[table]` lines become sections; each
/// commented-out `#key = default` becomes an entry with the comment above it.
fn config_page(example: &str) -> String {
    let mut page = format!(
        ".TH RBDSNAPD.TOML 5 \"\" \"rbdsnapd {}\" \"rbdsnapd\"\n\
         .SH NAME\nrbdsnapd.toml \\- configuration of rbdsnapd(8)\n\
         .SH SYNOPSIS\n/etc/rbdsnapd/rbdsnapd.toml\n.SH DESCRIPTION\n",
        env!("CARGO_PKG_VERSION")
    );
    let mut para: Vec<&str> = Vec::new();
    let mut keys: Vec<(&str, &str)> = Vec::new();
    let mut table = String::new();
    for line in example.lines() {
        if let Some((key, value)) = key_line(line) {
            keys.push((key, value));
            continue;
        }
        if !keys.is_empty() {
            entry(&mut page, &table, &keys, &para);
            keys.clear();
            para.clear();
        }
        let trimmed = line.trim();
        if let Some(title) = banner(trimmed) {
            flush(&mut page, &mut para);
            page.push_str(&format!(".SH {}\n", escape(&title.to_uppercase())));
        } else if trimmed.starts_with('[') && trimmed.ends_with(']') {
            flush(&mut page, &mut para);
            table = trimmed.trim_matches(['[', ']']).to_string();
            page.push_str(&format!(
                ".PP\nKeys of the \\fB{}\\fR table:\n",
                escape(trimmed)
            ));
        } else if trimmed.is_empty() {
            flush(&mut page, &mut para);
        } else if let Some(text) = trimmed.strip_prefix('#') {
            para.push(text.strip_prefix(' ').unwrap_or(text));
        }
    }
    if !keys.is_empty() {
        entry(&mut page, &table, &keys, &para);
    }
    flush(&mut page, &mut para);
    page.push_str(".SH SEE ALSO\nrbdsnapd(8), rbdsnapctl(8), systemd.service(5)\n");
    page
}

/// `#key = value` (a key, commented out with its default).
fn key_line(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?;
    let (key, value) = rest.split_once(" = ")?;
    let is_key = !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    is_key.then_some((key, value))
}

/// `# --- Title ----` → `Title`.
fn banner(line: &str) -> Option<String> {
    let inner = line.strip_prefix("# ---")?.trim_end_matches('-').trim();
    (!inner.is_empty()).then(|| inner.to_string())
}

fn entry(page: &mut String, table: &str, keys: &[(&str, &str)], para: &[&str]) {
    page.push_str(".TP\n");
    for (i, (key, value)) in keys.iter().enumerate() {
        if i > 0 {
            page.push_str(".br\n");
        }
        let full = if table.is_empty() {
            key.to_string()
        } else {
            format!("{table}.{key}")
        };
        page.push_str(&format!(
            "\\fB{}\\fR (default: {})\n",
            escape(&full),
            escape(value)
        ));
    }
    text(page, para);
}

fn flush(page: &mut String, para: &mut Vec<&str>) {
    if !para.is_empty() {
        page.push_str(".PP\n");
        text(page, para);
        para.clear();
    }
}

/// Running text; lines indented by four or more spaces (commands, examples)
/// stay as they are.
fn text(page: &mut String, lines: &[&str]) {
    let mut literal = false;
    for line in lines {
        let indented = line.starts_with("    ");
        if indented != literal {
            page.push_str(if indented { ".nf\n" } else { ".fi\n" });
            literal = indented;
        }
        page.push_str(&escape(if indented { line.trim_start() } else { line }));
        page.push('\n');
    }
    if literal {
        page.push_str(".fi\n");
    }
}

/// roff: backslashes doubled, and a leading `.` or `'` is not a request.
fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\\\").replace('-', "\\-");
    if text.starts_with('.') || text.starts_with('\'') {
        format!("\\&{text}")
    } else {
        text
    }
}
