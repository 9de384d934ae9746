// Package fence makes the API server refuse the writes of a leader whose
// term is over.
//
// A leader that is paused (a long GC, a debugger, SIGSTOP, a frozen VM) or
// cut off keeps running its work after another replica has taken the
// Lease; no lease can stop code that is not running. The store it writes
// to can: this package installs a ValidatingAdmissionPolicy whose
// parameter is the election's Lease (paramKind coordination.k8s.io/v1
// Lease), so the API server compares each write of the controller with the
// Lease as it is now, and refuses the writes of any other term.
//
// # Two forms
//
// Policy fences by stamp. The work stamps every object it writes with its
// term, from the ctx OnStartedLeading received:
//
//	cm := desired.DeepCopy()
//	if err := fence.Stamp(ctx, cm); err != nil { ... }
//	_, err := client.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{})
//	if fence.IsFenced(err) {
//		return // the term is over
//	}
//
// The stamp is three annotations (HolderAnnotation, TermAnnotation,
// LeaseUIDAnnotation), and the policy admits a create or update by the
// controller only if they equal the Lease's spec.holderIdentity,
// spec.leaseTransitions and metadata.uid. It works whatever the
// identities, but covers only creates and updates of the main resource.
//
// IdentityPolicy needs no stamping. It admits the controller's creates,
// updates and deletes, subresources such as status included, only from
// the pod that holds the Lease: the API server names the pod of a
// pod-bound service account token in the user-info extra PodNameExtra,
// and the Lease's holder must be that pod's name, or that name followed
// by "_" and anything (leasehold.DefaultIdentity is "<hostname>_<random>",
// and a pod's hostname is its name unless spec.hostname is set or the
// name is longer than 63 characters). A holder names a pod but not its
// namespace, so the pod's service account (the request's username) must
// be of the holders' namespace: Config.PodNamespace, by default the
// Lease's.
//
// The two can be installed together for one Lease: stamps for what the
// work writes, the pod for deletes and status.
//
// Both policies match only the requests of Config.Writers, usually the
// controller's service account: users, other controllers and the garbage
// collector write as before. The repository's examples ship both as
// YAML, generated from these functions.
//
// # What is guaranteed
//
//   - Each fenced write is compared, at admission, with the API server's
//     copy of the Lease. A write whose stamp (or pod) is not the current
//     holder's is refused with 403 Forbidden and a message that names the
//     write's term and the Lease's (IsFenced reports it). So is every
//     fenced write while the Lease has no holder (released), and, as a
//     configuration error (422), while it does not exist.
//   - Each API server's copy only moves forward: once it has refused a
//     term, it never admits that term again.
//   - The policy fails closed (failurePolicy Fail): if the API server
//     cannot evaluate it, for instance before its copy of the Leases has
//     synced after a restart, the fenced write is refused.
//
// # What is not
//
//   - The copy lags the Lease. The API server reads the parameter through
//     an informer, fed by a watch; for a few milliseconds after a takeover
//     it still admits the old term (and refuses the new one: a new leader
//     may retry its first fenced writes). With several API servers, each
//     has its own copy and its own lag.
//   - Admission is not atomic with storage. A write admitted just before
//     the copy changed can be committed after the takeover, in etcd's
//     order. An update conditioned on a resourceVersion still cannot
//     overwrite what the new leader wrote since (409 Conflict); a create,
//     a patch, or an update without resourceVersion can land.
//   - The policy never looks at time. A leader whose lease expired without
//     anyone taking over still writes; its own elector stops its work at
//     the renew deadline.
//   - With Policy, the stamp checked is the one on the object as it would
//     be stored. A write that sets no stamp (a merge patch or a
//     server-side apply without it, a read-modify-write that sends back
//     the stamp it read) keeps the stored one and is judged by it: refused
//     if it is not the current term's (the refusal says the write kept the
//     stored stamp), but admitted if the current leader wrote the object
//     last, since nothing in such a write says who sent it. A write that
//     removes the stored stamp is refused, with AllowUnstamped too. Deletes
//     carry no object and are not fenced; subresource writes are not
//     supported, since the API server may reset metadata on them. Stamp
//     every write, and install IdentityPolicy as well to fence the writes
//     a stamp cannot (README.md has the table of which policy fences
//     which write).
//   - With Policy, identities must not be reused across processes: a new
//     process with the identity and term of an old one (client-go reuses
//     leaseTransitions when a holder re-acquires its own Lease) would
//     share its stamp. leasehold.DefaultIdentity is unique per process.
//   - With IdentityPolicy, two electors in one pod are one writer, and a
//     token not bound to a pod is refused.
//   - Only writes through this API server's admission are fenced: reads
//     are not, and neither are other stores. Give those Term.Transitions
//     (with Term.UID) as a fencing token of their own.
//
// # Installing
//
// Create the policy before its binding, as a user allowed to get the Lease
// (the API server checks that when the binding is created). The API
// server enforces a new policy about a second later; once any policy
// takes Leases as parameter, it keeps a copy of every Lease in the
// cluster, node heartbeat Leases included. ValidatingAdmissionPolicy is GA
// and on by default since Kubernetes 1.30.
package fence
