//! The image-store adapter: the `ImageStore` trait the workflow drives and its
//! real implementation — librados through the `ceph` crate, librbd through the
//! project's own small `extern "C"` layer with safe wrappers (snapshots,
//! clone v1/v2, flatten with progress, parent info, removal). Every `unsafe`
//! for Ceph lives here. Built by the engine issue.
