//! The README is part of the interface: every error kind the daemon can
//! answer with is documented there with its code.

#[test]
fn every_error_kind_is_documented_with_its_code() {
    let readme = include_str!("../README.md");
    for kind in rbdsnapd::protocol::ErrorKind::ALL {
        let row = format!("| {} | `{}` |", kind.code(), kind.as_str());
        assert!(readme.contains(&row), "README lacks the row {row:?}");
    }
}

#[test]
fn every_method_is_documented() {
    let readme = include_str!("../README.md");
    for method in rbdsnapd::protocol::METHODS {
        assert!(
            readme.contains(&format!("| `{method}` |")),
            "README lacks the method {method}"
        );
    }
}
