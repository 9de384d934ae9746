package main

// pluginMutations break the contract points of the kubectl plugin's yield
// (kubectl-leasehold/internal/plugin/yield.go). See mutations_root.go for
// the format.
var pluginMutations = []mutation{
	{
		Name:     "plugin-yield-holder-unchanged-is-a-handoff",
		Point:    "yield reports a handoff only when another candidate holds the Lease (a new term started)",
		File:     "kubectl-leasehold/internal/plugin/yield.go",
		Original: `		return h != "" && h != from`,
		Mutated:  `		return h == h`,
		Pkg:      "kubectl-leasehold/internal/plugin",
		Tests:    []string{"TestYieldTimesOutWhenTheHolderIgnoresIt", "TestYieldReleasedButNobodyTookIt"},
		Contract: true,
	},
	{
		Name:     "plugin-yield-release-is-a-handoff",
		Point:    "a released Lease that nobody took is not a handoff: yield says since when it is unheld",
		File:     "kubectl-leasehold/internal/plugin/yield.go",
		Original: `		return h != "" && h != from`,
		Mutated:  `		return h != from`,
		Pkg:      "kubectl-leasehold/internal/plugin",
		Tests:    []string{"TestYieldReleasedButNobodyTookIt"},
		Contract: true,
	},
	{
		Name:     "plugin-yield-request-left-pending",
		Point:    "yield withdraws its handoff request whatever the outcome",
		File:     "kubectl-leasehold/internal/plugin/yield.go",
		Original: `	o.withdraw(ctx, client, ns, want)`,
		Mutated:  ``,
		Pkg:      "kubectl-leasehold/internal/plugin",
		Tests:    []string{"TestYieldToAnyoneWithdrawsTheRequest", "TestYieldTimesOutWhenTheHolderIgnoresIt"},
		Contract: true,
	},
}
