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

/// The README's methods table: method → (params cell, result cell).
fn method_rows(readme: &str) -> std::collections::BTreeMap<String, (String, String)> {
    let section = readme
        .split("### Methods")
        .nth(1)
        .expect("README has a Methods section");
    section
        .lines()
        .skip_while(|l| !l.starts_with("| method |"))
        .skip(2)
        .take_while(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").collect();
            let name = cells.first()?.trim().trim_matches('`').to_string();
            Some((name, (cells.get(1)?.to_string(), cells.get(2)?.to_string())))
        })
        .collect()
}

/// The top-level properties of a result schema, following `$ref`s and
/// every branch of an `anyOf`.
fn result_properties(document: &serde_json::Value, schema: &serde_json::Value) -> Vec<String> {
    let target = match schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        Some(name) => &document["components"]["schemas"][name],
        None => schema,
    };
    let mut names: Vec<String> = target["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    for branch in target["anyOf"].as_array().into_iter().flatten() {
        names.extend(result_properties(document, branch));
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_methods_table_and_the_openrpc_document_agree() {
    let readme = include_str!("../README.md");
    let rows = method_rows(readme);
    let document = rbdsnapd::openrpc::document();
    let methods = document["methods"].as_array().expect("methods");
    let described: Vec<&str> = methods.iter().filter_map(|m| m["name"].as_str()).collect();
    let listed: Vec<&str> = rows.keys().map(String::as_str).collect();
    let mut sorted = described.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "README methods vs the OpenRPC document");
    for method in methods {
        let name = method["name"].as_str().expect("name");
        let (params, result) = &rows[name];
        for param in method["params"].as_array().expect("params") {
            let param = param["name"].as_str().expect("param name");
            assert!(
                params.contains(&format!("`{param}`")),
                "README's {name} row does not name the param `{param}`"
            );
        }
        for field in result_properties(&document, &method["result"]["schema"]) {
            assert!(
                result.contains(&format!("`{field}`")) || result.contains(&format!("`{field}[]`")),
                "README's {name} row does not name the result field `{field}`"
            );
        }
    }
}
