package link

import "errors"

// Shape is a rate limit for a container's host-side link, in bits per
// second and bits; zero rates are unlimited. Ingress is traffic into the
// container (leaving the host end), egress traffic out of it (entering the
// host end).
type Shape struct {
	IngressRate, IngressBurst uint64
	EgressRate, EgressBurst   uint64
}

// ShapeLink limits the traffic of the host-side link dev.
func ShapeLink(dev string, s Shape) error {
	return errors.New("bandwidth shaping: being implemented")
}
