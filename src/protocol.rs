//! The wire contract: JSON-RPC 2.0 requests, responses and progress
//! notifications, one object per line, and the stable error codes with their
//! machine-readable kinds. Nothing but types lives here. Built by the daemon
//! issue.
