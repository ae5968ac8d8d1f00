//! Checks the hand-written librbd/librados declarations of `src/rbd/ffi.rs`
//! against the C headers installed on this machine, so that a wrong argument
//! type, a missing `const`, a changed struct or a wrong constant fails here
//! instead of corrupting memory at run time.
//!
//! The test reads ffi.rs as text, translates every function, type alias,
//! struct field and constant to C, and compiles a file that includes
//! `<rbd/librbd.h>` with warnings as errors:
//! - each function is assigned to a pointer of the type we declared (any
//!   difference is an incompatible-pointer-types error);
//! - each alias and struct field type is compared with
//!   `__builtin_types_compatible_p`;
//! - struct sizes, alignments and field offsets, as Rust lays them out, and
//!   constant values, as Rust has them, are `_Static_assert`ed.

use std::mem::{align_of, size_of, MaybeUninit};
use std::process::Command;

use rbdsnapd::rbd::ffi;

const FFI_SOURCE: &str = include_str!("../src/rbd/ffi.rs");

/// One struct as Rust lays it out.
struct Layout {
    name: &'static str,
    size: usize,
    align: usize,
    fields: Vec<(&'static str, usize)>,
}

/// The Rust layout of an ffi struct; the field list must name every field
/// (the test compares it with the fields parsed from ffi.rs).
macro_rules! layout {
    ($t:ident { $($f:ident),* $(,)? }) => {{
        let probe = MaybeUninit::<ffi::$t>::uninit();
        let base = probe.as_ptr();
        Layout {
            name: stringify!($t),
            size: size_of::<ffi::$t>(),
            align: align_of::<ffi::$t>(),
            fields: vec![$((
                stringify!($f),
                // SAFETY: `addr_of!` only computes the field's address inside
                // the (uninitialised) probe; nothing is read.
                unsafe { std::ptr::addr_of!((*base).$f) } as usize - base as usize,
            )),*],
        }
    }};
}

fn rust_layouts() -> Vec<Layout> {
    vec![
        layout!(rbd_linked_image_spec_t {
            pool_id,
            pool_name,
            pool_namespace,
            image_id,
            image_name,
            trash
        }),
        layout!(rbd_snap_spec_t {
            id,
            namespace_type,
            name
        }),
        layout!(rbd_snap_info_t { id, size, name }),
        layout!(rbd_image_watcher_t { addr, id, cookie }),
    ]
}

/// Every constant of ffi.rs with its Rust value.
macro_rules! constants {
    ($($c:ident),* $(,)?) => { vec![$((stringify!($c), ffi::$c as i128)),*] };
}

fn rust_constants() -> Vec<(&'static str, i128)> {
    constants![
        RBD_SNAP_NAMESPACE_TYPE_USER,
        RBD_SNAP_NAMESPACE_TYPE_TRASH,
        RBD_SNAP_REMOVE_UNPROTECT,
        RBD_SNAP_REMOVE_FLATTEN,
        RBD_SNAP_REMOVE_FORCE,
        RBD_SNAP_CREATE_SKIP_QUIESCE,
        RBD_IMAGE_OPTION_FEATURES,
        RBD_IMAGE_OPTION_CLONE_FORMAT,
        RBD_FEATURE_LAYERING,
        RBD_FEATURE_EXCLUSIVE_LOCK,
        RBD_FEATURE_OBJECT_MAP,
        RBD_FEATURE_FAST_DIFF,
        RBD_FEATURE_DEEP_FLATTEN,
    ]
}

// ---- reading ffi.rs ------------------------------------------------------

/// ffi.rs without comments, attributes' contents kept.
fn strip_comments(source: &str) -> String {
    source
        .lines()
        .map(|line| line.find("//").map_or(line, |at| &line[..at]))
        .collect::<Vec<_>>()
        .join("\n")
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Split at `sep` outside (), <> and {}.
fn split_top(s: &str, sep: char) -> Vec<String> {
    let (mut parts, mut depth, mut cur) = (Vec::new(), 0i32, String::new());
    for c in s.chars() {
        match c {
            '>' if cur.ends_with('-') => {} // the arrow of `-> T`
            '(' | '<' | '{' => depth += 1,
            ')' | '>' | '}' => depth -= 1,
            _ => {}
        }
        if c == sep && depth == 0 {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| squash(&p))
        .filter(|p| !p.is_empty())
        .collect()
}

/// The text between the `{` at `open` and its matching `}`.
fn block_at(text: &str, open: usize) -> &str {
    let mut depth = 0;
    for (i, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &text[open + 1..open + i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced braces in ffi.rs");
}

/// The bodies of all `extern "C" { ... }` blocks, and the text outside them.
fn extern_blocks(text: &str) -> (Vec<&str>, String) {
    let (mut blocks, mut outside, mut rest) = (Vec::new(), String::new(), 0);
    for (at, _) in text.match_indices("extern \"C\" {") {
        let open = at + text[at..].find('{').expect("brace");
        let body = block_at(text, open);
        outside.push_str(&text[rest..at]);
        blocks.push(body);
        rest = open + body.len() + 2;
    }
    outside.push_str(&text[rest..]);
    (blocks, outside)
}

#[derive(Debug)]
struct Function {
    name: String,
    params: Vec<String>,
    ret: Option<String>,
}

fn parse_function(item: &str) -> Function {
    let rest = item
        .strip_prefix("pub fn ")
        .unwrap_or_else(|| panic!("not a `pub fn`: {item}"));
    let open = rest.find('(').expect("parameter list");
    let close = rest.rfind(')').expect("parameter list end");
    let params = split_top(&rest[open + 1..close], ',')
        .iter()
        .map(|p| {
            p.split_once(':')
                .map_or(p.as_str(), |(_, ty)| ty)
                .trim()
                .to_string()
        })
        .collect();
    let ret = rest[close + 1..]
        .trim()
        .strip_prefix("->")
        .map(|r| r.trim().to_string());
    Function {
        name: rest[..open].trim().to_string(),
        params,
        ret,
    }
}

fn functions(blocks: &[&str]) -> Vec<Function> {
    blocks
        .iter()
        .flat_map(|b| split_top(b, ';'))
        .map(|item| parse_function(&item))
        .collect()
}

/// `pub type NAME = TYPE;` outside the extern blocks.
fn aliases(outside: &str) -> Vec<(String, String)> {
    split_top(outside, ';')
        .iter()
        .filter_map(|item| item.find("pub type ").map(|at| &item[at + 9..]))
        .map(|decl| {
            let (name, ty) = decl.split_once('=').expect("alias");
            (name.trim().to_string(), ty.trim().to_string())
        })
        .collect()
}

/// `pub struct NAME { field: TYPE, ... }`.
fn structs(outside: &str) -> Vec<(String, Vec<(String, String)>)> {
    outside
        .match_indices("pub struct ")
        .map(|(at, _)| {
            let open = at + outside[at..].find('{').expect("struct body");
            let name = outside[at + 11..open].trim().to_string();
            let fields = split_top(block_at(outside, open), ',')
                .iter()
                .map(|f| {
                    let (name, ty) = f.trim_start_matches("pub ").split_once(':').expect("field");
                    (name.trim().to_string(), ty.trim().to_string())
                })
                .collect();
            (name, fields)
        })
        .collect()
}

/// Names of `pub const NAME: ...`.
fn constant_names(outside: &str) -> Vec<String> {
    outside
        .match_indices("pub const ")
        .map(|(at, _)| {
            outside[at + 10..]
                .split(':')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .collect()
}

// ---- Rust types as C -------------------------------------------------------

/// The C spelling of a Rust type as ffi.rs writes it.
fn c_type(rust: &str) -> String {
    let rust = rust.trim();
    if let Some(pointee) = rust.strip_prefix("*const ") {
        return format!("{} const *", c_type(pointee));
    }
    if let Some(pointee) = rust.strip_prefix("*mut ") {
        return format!("{} *", c_type(pointee));
    }
    if let Some(inner) = rust
        .strip_prefix("Option<")
        .and_then(|r| r.strip_suffix('>'))
    {
        return c_fn_pointer(inner);
    }
    let primitive = match rust {
        "c_void" | "()" => "void",
        "c_char" => "char",
        "c_int" => "int",
        "c_uint" => "unsigned int",
        "c_long" => "long",
        "c_ulong" => "unsigned long",
        "bool" => "bool",
        "i8" => "int8_t",
        "u8" => "uint8_t",
        "i16" => "int16_t",
        "u16" => "uint16_t",
        "i32" => "int32_t",
        "u32" => "uint32_t",
        "i64" => "int64_t",
        "u64" => "uint64_t",
        "usize" => "size_t",
        "isize" => "ssize_t",
        other => {
            assert!(
                other.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "ffi.rs uses a type the header test cannot translate: `{other}`"
            );
            other // a C typedef of the same name
        }
    };
    primitive.to_string()
}

/// `unsafe extern "C" fn(A, B) -> R` as the C type `R (*)(A, B)`.
fn c_fn_pointer(rust: &str) -> String {
    let f = rust
        .trim_start_matches("unsafe ")
        .trim_start_matches("extern \"C\" ");
    let f = parse_function(&format!("pub fn {}", f.trim_start_matches("fn")));
    format!(
        "{} (*)({})",
        f.ret.as_deref().map_or("void".to_string(), c_type),
        c_params(&f.params)
    )
}

/// A Rust type's text inside a C string literal.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn c_params(params: &[String]) -> String {
    if params.is_empty() {
        return "void".to_string();
    }
    params
        .iter()
        .map(|p| c_type(p))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- the C file --------------------------------------------------------------

fn c_checks() -> (String, usize) {
    let text = strip_comments(FFI_SOURCE);
    let (blocks, outside) = extern_blocks(&text);
    let functions = functions(&blocks);
    let declared = blocks
        .iter()
        .map(|b| b.matches("fn ").count())
        .sum::<usize>();
    assert_eq!(
        functions.len(),
        declared,
        "the parser missed functions: {functions:?}"
    );
    let mut c = String::from(
        "#include <stdbool.h>\n#include <stddef.h>\n#include <stdint.h>\n#include <sys/types.h>\n\
         #include <rados/librados.h>\n#include <rbd/librbd.h>\n\n",
    );
    for f in &functions {
        let ret = f.ret.as_deref().map_or("void".to_string(), c_type);
        c += &format!(
            "{ret} (*check_{0})({1}) = {0};\n",
            f.name,
            c_params(&f.params)
        );
    }
    for (name, ty) in aliases(&outside) {
        let (c_ty, ty) = (c_type(&ty), escape(&ty));
        c += &format!(
            "_Static_assert(__builtin_types_compatible_p({name}, {c_ty}), \"type {name}: Rust's `{ty}` is not C's\");\n"
        );
    }
    c += &struct_checks(&outside);
    c += &constant_checks(&outside);
    (c, functions.len())
}

fn struct_checks(outside: &str) -> String {
    let parsed = structs(outside);
    let layouts = rust_layouts();
    let parsed_names: Vec<_> = parsed.iter().map(|(n, _)| n.as_str()).collect();
    let known: Vec<_> = layouts.iter().map(|l| l.name).collect();
    assert_eq!(
        parsed_names, known,
        "add new ffi structs to rust_layouts() in this test"
    );
    let mut c = String::new();
    for ((name, fields), layout) in parsed.iter().zip(&layouts) {
        let listed: Vec<_> = layout.fields.iter().map(|(f, _)| *f).collect();
        let actual: Vec<_> = fields.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            actual, listed,
            "list every field of {name} in rust_layouts()"
        );
        c += &format!(
            "_Static_assert(sizeof({name}) == {0}, \"sizeof({name}) is {0} in Rust\");\n",
            layout.size
        );
        c += &format!(
            "_Static_assert(_Alignof({name}) == {0}, \"alignof({name}) is {0} in Rust\");\n",
            layout.align
        );
        for ((field, ty), (_, offset)) in fields.iter().zip(&layout.fields) {
            let (c_ty, ty) = (c_type(ty), escape(ty));
            c += &format!(
                "_Static_assert(offsetof({name}, {field}) == {offset}, \"{name}.{field} is at {offset} in Rust\");\n\
                 _Static_assert(__builtin_types_compatible_p(__typeof__((({name} *)0)->{field}), {c_ty}), \
                 \"{name}.{field}: Rust's `{ty}` is not C's\");\n"
            );
        }
    }
    c
}

fn constant_checks(outside: &str) -> String {
    let values = rust_constants();
    let known: Vec<_> = values.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        constant_names(outside),
        known,
        "add new ffi constants to rust_constants() in this test"
    );
    values
        .iter()
        .map(|(name, value)| {
            format!("_Static_assert({name} == {value}, \"{name} is {value} in Rust\");\n")
        })
        .collect()
}

#[test]
fn ffi_declarations_match_the_installed_librbd_header() {
    let (source, count) = c_checks();
    assert!(count >= 25, "only {count} functions parsed from ffi.rs");
    let dir = std::env::temp_dir().join(format!("rbdsnapd-ffi-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let c_file = dir.join("check.c");
    std::fs::write(&c_file, &source).expect("write check.c");
    let out = Command::new("cc")
        .args([
            "-std=gnu11",
            "-c",
            "-Wall",
            "-Werror",
            "-Wincompatible-pointer-types",
            "-o",
        ])
        .arg(dir.join("check.o"))
        .arg(&c_file)
        .output()
        .expect("run cc (build-essential)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "src/rbd/ffi.rs does not match the installed headers:\n{}\n--- generated C ---\n{source}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn c_spelling_of_rust_types() {
    assert_eq!(c_type("*const c_char"), "char const *");
    assert_eq!(c_type("*mut *mut c_char"), "char * *");
    assert_eq!(c_type("*mut rbd_image_t"), "rbd_image_t *");
    assert_eq!(
        c_type("Option<unsafe extern \"C\" fn(u64, u64, *mut c_void) -> c_int>"),
        "int (*)(uint64_t, uint64_t, void *)"
    );
}
