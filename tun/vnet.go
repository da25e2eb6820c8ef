package tun

import "encoding/binary"

// The virtio-net header that a TUN device opened with IFF_VNET_HDR puts
// before every packet in both directions (struct virtio_net_hdr,
// include/uapi/linux/virtio_net.h). The TUN driver uses the host's byte
// order unless TUNSETVNETLE/BE says otherwise.
const vnetHdrLen = 10

// virtio_net_hdr flags.
const (
	// vnetNeedsCsum: the transport checksum is partial (only the
	// pseudo-header's sum is in it); the checksum over csumStart.. goes at
	// csumStart+csumOffset. Linux's CHECKSUM_PARTIAL.
	vnetNeedsCsum = 1
	// vnetDataValid: the kernel already validated the checksums
	// (CHECKSUM_UNNECESSARY).
	vnetDataValid = 2
)

// virtio_net_hdr gso types.
const (
	vnetGSONone  = 0
	vnetGSOTCPv4 = 1
	vnetGSOTCPv6 = 4
	vnetGSOECN   = 0x80 // flag: the sender set CWR on the first segment
)

// vnetHdr is a decoded virtio_net_hdr.
type vnetHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16 // length of the headers to copy into every segment
	gsoSize    uint16 // segment payload size (the MSS)
	csumStart  uint16 // offset of the transport header from the IP header
	csumOffset uint16 // offset of the checksum field from csumStart
}

func (h *vnetHdr) decode(b []byte) {
	_ = b[vnetHdrLen-1]
	h.flags = b[0]
	h.gsoType = b[1]
	h.hdrLen = binary.NativeEndian.Uint16(b[2:])
	h.gsoSize = binary.NativeEndian.Uint16(b[4:])
	h.csumStart = binary.NativeEndian.Uint16(b[6:])
	h.csumOffset = binary.NativeEndian.Uint16(b[8:])
}

func (h *vnetHdr) encode(b []byte) {
	_ = b[vnetHdrLen-1]
	b[0] = h.flags
	b[1] = h.gsoType
	binary.NativeEndian.PutUint16(b[2:], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:], h.csumOffset)
}
