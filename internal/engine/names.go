package engine

import (
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/store"
)

// validName is Docker's rule for container names.
var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

func validName(s string) bool { return nameRE.MatchString(s) }

// newID returns a 64-hex-character container ID, as Docker's.
func newID() string {
	b := make([]byte, 32)
	if _, err := crand.Read(b); err != nil {
		panic(fmt.Sprintf("read random: %v", err)) // the kernel's CSPRNG does not fail
	}
	return hex.EncodeToString(b)
}

// Docker-style generated names: adjective_scientist, with a digit appended
// on retries (as Docker does) once plain names collide.
var (
	adjectives = []string{"admiring", "agile", "amazing", "awesome", "beautiful", "blissful", "bold",
		"brave", "busy", "calm", "charming", "clever", "compassionate", "competent", "confident",
		"cool", "dazzling", "determined", "dreamy", "eager", "ecstatic", "elastic", "elegant",
		"eloquent", "epic", "exciting", "fervent", "festive", "flamboyant", "focused", "friendly",
		"frosty", "funny", "gallant", "gentle", "gifted", "goofy", "gracious", "great", "happy",
		"hardcore", "heuristic", "hopeful", "hungry", "infallible", "inspiring", "intelligent",
		"interesting", "jolly", "jovial", "keen", "kind", "laughing", "loving", "lucid", "magical",
		"modest", "merry", "musing", "mystifying", "naughty", "nervous", "nice", "nifty",
		"nostalgic", "objective", "optimistic", "peaceful", "pedantic", "pensive", "practical",
		"priceless", "quirky", "quizzical", "recursing", "relaxed", "reverent", "romantic", "serene",
		"sharp", "silly", "sleepy", "stoic", "strange", "stupefied", "suspicious", "sweet",
		"tender", "thirsty", "trusting", "unruffled", "upbeat", "vibrant", "vigilant", "vigorous",
		"vivid", "wizardly", "wonderful", "xenodochial", "youthful", "zealous", "zen"}
	surnames = []string{"agnesi", "albattani", "allen", "almeida", "archimedes", "ardinghelli",
		"babbage", "bardeen", "bartik", "bassi", "bell", "benz", "bhabha", "blackburn", "bohr",
		"booth", "borg", "bose", "boyd", "brahmagupta", "brattain", "brown", "carson", "cerf",
		"chandrasekhar", "clarke", "colden", "cori", "cray", "curie", "darwin", "davinci", "dijkstra",
		"dubinsky", "easley", "einstein", "elion", "engelbart", "euclid", "euler", "fermat", "fermi",
		"feynman", "franklin", "gagarin", "galileo", "gauss", "goldberg", "goodall", "hamilton",
		"haslett", "hawking", "heisenberg", "hermann", "hodgkin", "hopper", "hypatia", "jackson",
		"jang", "jennings", "johnson", "kahn", "kalam", "kapitsa", "kare", "kepler", "kernighan",
		"khorana", "kilby", "knuth", "lalande", "lamarr", "lamport", "leakey", "leavitt", "lichterman",
		"liskov", "lovelace", "lumiere", "mahavira", "mayer", "mccarthy", "mcclintock", "mclean",
		"meitner", "mendel", "metcalfe", "mirzakhani", "montalcini", "moore", "morse", "napier",
		"newton", "nobel", "noether", "northcutt", "noyce", "panini", "pascal", "pasteur", "payne",
		"perlman", "pike", "poincare", "postel", "raman", "ramanujan", "ride", "ritchie", "roentgen",
		"rosalind", "saha", "sammet", "shannon", "shaw", "shockley", "sinoussi", "snyder",
		"spence", "stonebraker", "sutherland", "swartz", "tesla", "thompson", "torvalds", "turing",
		"varahamihira", "visvesvaraya", "volhard", "wescoff", "wilbur", "wiles", "williams",
		"wilson", "wing", "wozniak", "wright", "wu", "yalow", "yonath", "zhukovsky"}
)

// randomName returns a generated name; retry > 0 appends a digit. The
// names need no secrecy: math/rand keeps a run from spending microseconds
// on the kernel's CSPRNG for each try.
func randomName(retry int) string {
	name := adjectives[rand.IntN(len(adjectives))] + "_" + surnames[rand.IntN(len(surnames))]
	if retry > 0 {
		name += strconv.Itoa(rand.IntN(10))
	}
	return name
}

// Rename gives container ref a new name, as docker rename: its record and
// the name index in one transaction, then the embedded DNS answers the new
// name (and no longer the old one). Its hostname stays, as in Docker, and
// so do the hosts files of containers linked to it.
func (e *Engine) Rename(ref, name string) error {
	name = strings.TrimPrefix(name, "/") // as --name
	if !validName(name) {
		return errdefs.Invalid("invalid container name %q: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", name)
	}
	c, err := e.Container(ref)
	if err != nil {
		return err
	}
	if c.Name == name {
		return errdefs.Invalid("container %s is named %s already", ref, name)
	}
	err = e.st.Update(func(tx store.Tx) error {
		cur, err := getContainer(tx, c.ID)
		if errors.Is(err, store.ErrNotFound) {
			return errdefs.NotFound("no such container: %s", ref)
		} else if err != nil {
			return err
		}
		if cur.State.Status == StatusCreated {
			// Its creator writes the record it holds: retry once it runs.
			return errdefs.Conflict("container %s is being set up: retry", cur.Name)
		}
		if owner, err := tx.Get(bucketNames, name); err == nil {
			return errdefs.Conflict("the container name %q is already in use by container %q: remove or rename that container first", name, string(owner))
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err := tx.Delete(bucketNames, cur.Name); err != nil {
			return err
		}
		if err := tx.Put(bucketNames, name, []byte(cur.ID)); err != nil {
			return err
		}
		cur.Name = name
		c = cur
		return putContainer(tx, cur)
	})
	if err != nil {
		return err
	}
	e.dnsChanged(c)
	return nil
}
