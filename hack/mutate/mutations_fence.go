package main

// fenceMutations break the contract points of package fence (policies' CEL evaluated in unit tests). See
// mutations_root.go for the format; set Pkg to the package's directory.
var fenceMutations = []mutation{}
