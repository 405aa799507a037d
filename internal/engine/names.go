package engine

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"regexp"
)

// validName is Docker's rule for container names.
var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

func validName(s string) bool { return nameRE.MatchString(s) }

// newID returns a 64-hex-character container ID, as Docker's.
func newID() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("read random: %v", err)) // the kernel's CSPRNG does not fail
	}
	return hex.EncodeToString(b)
}

// Docker-style generated names: adjective_scientist.
var (
	adjectives = []string{"agile", "bold", "brave", "calm", "clever", "eager", "fervent", "gentle", "happy",
		"jolly", "keen", "lucid", "merry", "nifty", "quirky", "serene", "sharp", "stoic", "tender", "vivid",
		"wizardly", "zealous", "upbeat", "trusting", "sweet", "relaxed", "practical", "optimistic", "nostalgic"}
	surnames = []string{"babbage", "cerf", "dijkstra", "engelbart", "hamilton", "hopper", "kahn", "knuth",
		"lamport", "liskov", "lovelace", "metcalfe", "perlman", "pike", "postel", "ritchie", "shannon",
		"thompson", "torvalds", "turing", "wozniak", "kernighan", "mccarthy", "noether", "bardeen", "curie"}
)

func randomName() string {
	pick := func(list []string) string {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(list))))
		if err != nil {
			panic(err)
		}
		return list[n.Int64()]
	}
	return pick(adjectives) + "_" + pick(surnames)
}
