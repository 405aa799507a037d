// Package cni is knit's face as a CNI plugin (spec 1.1.0 and the earlier
// versions in Versions). The knit binary runs it instead of the command line
// when started with CNI_COMMAND set and no arguments, which is how every CNI
// runtime executes a plugin. It decodes the runtime's environment and the
// plugin configuration, calls the engine's CNI operations, and writes the
// spec's result or error JSON on stdout. It makes no kernel changes of its
// own: the engine attaches, and its record of each attachment is what DEL,
// CHECK and GC work from.
//
// Invariants:
//   - Every failure is one JSON error object on stdout and exit status 1;
//     success of DEL, CHECK, GC and STATUS prints nothing.
//   - DEL needs only CNI_CONTAINERID, CNI_IFNAME and a decodable config: no
//     prevResult, no runtimeConfig, no namespace.
//   - The result is built from the engine's record and the network, then
//     converted to the config's cniVersion; a prevResult is kept and knit's
//     interfaces, addresses and routes are appended to it.
//
// Error codes: the spec's well-known ones, and knit's own from 100 on.
//
//	 1  incompatible CNI version (unsupported cniVersion; CHECK before 0.4.0;
//	    GC or STATUS before 1.1.0)
//	 2  unsupported field: an "ipam" section (knit allocates addresses itself),
//	    an unknown CNI_ARGS key without IgnoreUnknown
//	 3  unknown container: CHECK of an attachment knit has no record of
//	 4  invalid environment: CNI_COMMAND, CNI_CONTAINERID, CNI_IFNAME,
//	    CNI_NETNS or CNI_ARGS missing or malformed
//	 5  I/O failure reading the configuration or writing the result
//	 6  the configuration or its prevResult is not valid JSON of the right shape
//	 7  invalid configuration: a value knit refuses (subnet, port, address,
//	    network name, bridge name, ...), as the engine would for the CLI
//	11  try again later: knit's store stayed locked by other commands past
//	    its timeout
//	50  STATUS: knit cannot serve ADD on this network now (no free address,
//	    network being removed, configuration unusable)
//	51  STATUS: knit cannot work at all here (its engine, e.g. the firewall,
//	    cannot start), so existing attachments may lose connectivity too
//	100 knit failed: a kernel or store operation went wrong (details say which)
//	101 conflict: something is taken (address, host port, subnet, bridge)
//	102 not found: something the request names does not exist
//	103 CHECK: the attachment differs from knit's record or from prevResult
package cni
