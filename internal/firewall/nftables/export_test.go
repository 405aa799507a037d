package nftables

// WantTable lets the kernel tests check the unit tests' rendering against
// what nft itself prints.
const WantTable = wantTable

// TestLinks are the links of WantTable, by owner.
var TestLinks = testLinks
