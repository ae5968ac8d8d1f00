//! The direct-snapshot workflow: pre-flight, freeze, temporary snapshot, thaw
//! (on every path), clone, flatten, final `snap`; each step records what its
//! undo needs before acting, and a failure undoes completed steps in reverse.
//! Driven against the `Hypervisor` and `ImageStore` traits so that every
//! failure can be injected in unit tests. Built by the engine issue.
