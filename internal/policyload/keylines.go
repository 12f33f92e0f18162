package policyload

// KeyLines indexes TOML source by key path ("updates.periodic.window[1].days",
// a table's path for its header) and returns a lookup giving the line of a
// path, or of its nearest parent, or 0. The policy's own errors locate keys
// this way; other TOML readers (offpeak migrate) share it.
func KeyLines(src string) func(path string) int {
	return indexLines(src).lookup
}
