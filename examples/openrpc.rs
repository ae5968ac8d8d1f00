//! Print the OpenRPC document the daemon serves from `rpc.discover`; the
//! repository's copy is regenerated with
//! `cargo run --example openrpc > docs/openrpc.json` (a test keeps it
//! current).

fn main() {
    let document = rbdsnapd::openrpc::document();
    match serde_json::to_string_pretty(&document) {
        Ok(text) => println!("{text}"),
        Err(e) => {
            eprintln!("openrpc: {e}");
            std::process::exit(1);
        }
    }
}
