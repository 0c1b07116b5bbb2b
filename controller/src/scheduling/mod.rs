#![deny(missing_docs)]
//! The packing engine: which pods fit which instance types, at what price, and why not.
//!
//! Pure and synchronous (no I/O). Start with [`Scheduler`]: build a [`SchedulerInput`] from
//! provisioners, [`InstanceType`]s, existing nodes and daemonsets, then
//! [`Scheduler::solve`] the pending pods into a [`Decision`]. [`simulate::simulate`] does the
//! same from parsed Kubernetes documents, for `kubectl karpenter simulate`.
//!
//! ```text
//!  Pod ──> PodInfo (requests, requirements, topology terms)
//!                 │  first-fit-decreasing: existing nodes ─> in-flight nodes ─> new node
//!                 v  (provisioners by weight; preferences relaxed one at a time)
//!  Provisioner ──> node requirements ∩ pod requirements ──> InstanceType options ──> Decision
//! ```
//!
//! - [`requirements`]: the In/NotIn/Exists/DoesNotExist/Gt/Lt algebra.
//! - [`resources`]: pod requests in milli-units.
//! - [`instance_type`]: instance types, offerings and AWS allocatable formulas.
//! - [`pod`]: the scheduling form of a pod, tolerations and topology terms.
//! - [`scheduler`]: the packer and its price-improvement pass.
//! - [`decision`]: the serialisable result.
//! - [`simulate`]: Kubernetes documents in, Decision out.
//!
//! Semantics worth knowing (Karpenter v0.27-v0.31 unless noted):
//! - Custom label keys a provisioner (or its instance types) does not define are incompatible
//!   unless the pod uses `NotIn`/`DoesNotExist`; well-known keys are allowed when undefined.
//!   A label some instance types define is `DoesNotExist` on the types that lack it.
//! - Existing nodes are filled only when Karpenter owns them (`karpenter.sh/provisioner-name`)
//!   and they are not being deleted: initialized ones with the allocatable they report, in-flight
//!   ones (no `karpenter.sh/initialized=true`) with their instance type's allocatable less
//!   unbound DaemonSet pods, ignoring startup and not-ready/unreachable taints. The rest still
//!   count for topology; the Decision's notes name the nodes left out.
//! - A provisioner being deleted, or whose `status.resources` exceeds its limits, launches
//!   nothing. A new node's DaemonSets must fit whatever the pending pod requests.
//! - Relaxation order: required node-affinity terms (first removed while more than one remains),
//!   preferred pod affinity, preferred pod anti-affinity, preferred node affinity (heaviest
//!   first; the heaviest remaining is treated as required), ScheduleAnyway spreads, then
//!   PreferNoSchedule taints (only when a provisioner has one).
//! - Limits count each in-flight node at the largest capacity among its remaining options
//!   (Karpenter's `subtractMax`), so a launch can never exceed them.
//! - Hostname spread assumes a fresh node (count 0) is always possible. Other spread keys are
//!   spread over the domains a usable provisioner offers plus existing nodes' domains under
//!   `nodeAffinityPolicy` (default Honor) and `nodeTaintsPolicy` (default Ignore), and, as in
//!   kube-scheduler, a domain's count holds only the matching pods on nodes that pass those
//!   policies (a planned node by the labels it is sure to carry); `minDomains` and
//!   `matchLabelKeys` apply. Pods on every node count, Karpenter's or not, cordoned or being
//!   deleted. An affinity term's `namespaceSelector` selects namespaces by their labels
//!   ([`SchedulerInput::namespaces`]; `{}` is every namespace), joined with its `namespaces`.
//! - Spot prices are never invented: without a price a spot offering is priced at the type's
//!   on-demand price, the node says `priceIsUpperBound`, and the Decision carries a note.
//! - After first-fit-decreasing, an improvement pass (deterministic) re-packs topology-free pods
//!   with a cpu/memory-balancing next-fit, and re-splits single nodes into cheaper smaller ones,
//!   keeping a change only when the total price drops.

pub mod decision;
pub mod instance_type;
pub mod pod;
pub mod requirements;
pub mod resources;
pub mod scheduler;
pub mod simulate;

pub use decision::{Decision, ExistingNodePlacement, NewNode, Relaxation, Unschedulable};
pub use instance_type::{InstanceType, Offering, Overhead};
pub use pod::PodInfo;
pub use requirements::{Requirements, ValueSet};
pub use scheduler::{
    ExistingNode, Prepared, Scheduler, SchedulerInput, SchedulerOptions, SchedulingError,
};
