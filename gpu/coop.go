package gpu

import "os"

// Coop is what lomo knows of the cooperative-matrix (tensor core) matmul on
// a device. Package wgsl checks it on the first matmul that could use it:
// it measures the subgroup size, then runs its cooperative-matrix kernels
// on small integer matrices, whose products every kernel must give exactly,
// under each reading of WGSL's transposed loads, and records here whether
// one reading gave every layout right. Until then Checked is false; an
// adapter without cooperative matrices, or a run with LOMO_COOP=off, starts
// checked and unusable, with the reason.
type Coop struct {
	Checked  bool   `json:"checked"`
	Usable   bool   `json:"usable"`
	Subgroup int    `json:"subgroup_size,omitempty"`  // threads per subgroup: the kernels' workgroup size
	Fragment int    `json:"fragment,omitempty"`       // the side of the square fragments (16 or 8)
	RowLoad  string `json:"row_major_load,omitempty"` // the WGSL load that reads row-major memory
	Reason   string `json:"reason,omitempty"`         // why it is not usable
}

// initCoop sets the starting Coop of a device opened on an adapter with caps.
func (d *Device) initCoop() {
	switch {
	case !d.Caps.CooperativeMatrix:
		d.coop = Coop{Checked: true, Reason: "the adapter offers no cooperative matrices"}
	case !d.Caps.F16:
		d.coop = Coop{Checked: true, Reason: "the adapter offers no shader-f16"}
	case os.Getenv("LOMO_COOP") == "off":
		d.coop = Coop{Checked: true, Reason: "turned off (LOMO_COOP=off)"}
	}
}

// Coop returns what is known of the cooperative-matrix matmul on d.
func (d *Device) Coop() Coop {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.coop
}

// SetCoop records the result of the check (package wgsl).
func (d *Device) SetCoop(c Coop) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c.Checked = true
	d.coop = c
}
