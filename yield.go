package leasehold

// PreferredHolderAnnotation, set on a Lease, asks its leader to hand the
// Lease over to the identity it names. It works on every cluster, unlike
// spec.preferredHolder, which the API server drops unless the
// CoordinatedLeaderElection feature gate is on.
const PreferredHolderAnnotation = "leasehold.dev/preferred-holder"
