//go:build !js

package gpu

// The few wgpu-native calls that the Go binding (oliverbestmann/webgpu
// v1.34.1) does not make usable, called directly:
//
//   - Requesting the device with an uncaptured-error callback and a
//     device-lost callback. The binding sets neither (its DeviceLostCallback
//     puts a Go pointer into a Go-allocated descriptor, which cgo's pointer
//     check rejects), and without an uncaptured-error callback wgpu-native
//     aborts the process on any error outside an error scope: out of memory,
//     internal errors (v29 rejects the Internal error filter), ...
//   - Reading the device's limits: the binding's Device.GetLimits frees a
//     Go pointer ("free(): invalid pointer").
//   - Creating a shader module without naga's loop bounding
//     (wgpuDeviceCreateShaderModuleTrusted), which the binding does not wrap.
//   - Printing wgpu-native's log (LOMO_WGPU_LOG): the binding installs a
//     log callback of wgpu-native 0.19's type, which takes a C string; v29
//     passes a string view (pointer and length, not terminated), so that
//     callback printed each message on into whatever followed it in memory.
//     lomo installs its own over it (setLogCallback).
//
// The declarations below mirror webgpu.h / wgpu.h of wgpu-native v29, the
// library the binding links; the static asserts hold the sizes and offsets
// measured against those headers, so a mistyped field fails the build. The
// binding keeps each object's C handle as the first field of its struct:
// handleOf and deviceFromHandle rely on that (checked by TestRawHandles).

/*
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

typedef struct WGPUAdapterImpl* lomoAdapter;
typedef struct WGPUDeviceImpl* lomoDevice;

typedef struct lomoChained { struct lomoChained* next; uint32_t sType; } lomoChained;
typedef struct { const char* data; size_t length; } lomoStringView;

typedef struct {
	lomoChained* nextInChain;
	uint32_t maxTextureDimension1D, maxTextureDimension2D, maxTextureDimension3D, maxTextureArrayLayers;
	uint32_t maxBindGroups, maxBindGroupsPlusVertexBuffers, maxBindingsPerBindGroup;
	uint32_t maxDynamicUniformBuffersPerPipelineLayout, maxDynamicStorageBuffersPerPipelineLayout;
	uint32_t maxSampledTexturesPerShaderStage, maxSamplersPerShaderStage, maxStorageBuffersPerShaderStage;
	uint32_t maxStorageTexturesPerShaderStage, maxUniformBuffersPerShaderStage;
	uint64_t maxUniformBufferBindingSize, maxStorageBufferBindingSize;
	uint32_t minUniformBufferOffsetAlignment, minStorageBufferOffsetAlignment, maxVertexBuffers;
	uint64_t maxBufferSize;
	uint32_t maxVertexAttributes, maxVertexBufferArrayStride, maxInterStageShaderVariables;
	uint32_t maxColorAttachments, maxColorAttachmentBytesPerSample;
	uint32_t maxComputeWorkgroupStorageSize, maxComputeInvocationsPerWorkgroup;
	uint32_t maxComputeWorkgroupSizeX, maxComputeWorkgroupSizeY, maxComputeWorkgroupSizeZ;
	uint32_t maxComputeWorkgroupsPerDimension, maxImmediateSize;
} lomoLimits;

typedef void (*lomoLostFn)(lomoDevice const*, uint32_t, lomoStringView, void*, void*);
typedef void (*lomoErrorFn)(lomoDevice const*, uint32_t, lomoStringView, void*, void*);
typedef void (*lomoRequestFn)(uint32_t, lomoDevice, lomoStringView, void*, void*);

typedef struct {
	lomoChained* nextInChain;
	lomoStringView label;
	size_t requiredFeatureCount;
	const uint32_t* requiredFeatures;
	const lomoLimits* requiredLimits;
	struct { lomoChained* nextInChain; lomoStringView label; } defaultQueue;
	struct { lomoChained* nextInChain; uint32_t mode; lomoLostFn callback; void* userdata1; void* userdata2; } deviceLostCallbackInfo;
	struct { lomoChained* nextInChain; lomoErrorFn callback; void* userdata1; void* userdata2; } uncapturedErrorCallbackInfo;
} lomoDeviceDescriptor;

typedef struct { lomoChained* nextInChain; uint32_t mode; lomoRequestFn callback; void* userdata1; void* userdata2; } lomoRequestDeviceCallbackInfo;
typedef struct { uint64_t id; } lomoFuture;

_Static_assert(sizeof(lomoLimits) == 152, "WGPULimits");
_Static_assert(offsetof(lomoLimits, maxUniformBufferBindingSize) == 64, "WGPULimits.maxUniformBufferBindingSize");
_Static_assert(offsetof(lomoLimits, maxBufferSize) == 96, "WGPULimits.maxBufferSize");
_Static_assert(offsetof(lomoLimits, maxImmediateSize) == 148, "WGPULimits.maxImmediateSize");
_Static_assert(sizeof(lomoDeviceDescriptor) == 144, "WGPUDeviceDescriptor");
_Static_assert(offsetof(lomoDeviceDescriptor, requiredLimits) == 40, "WGPUDeviceDescriptor.requiredLimits");
_Static_assert(offsetof(lomoDeviceDescriptor, deviceLostCallbackInfo) == 72, "WGPUDeviceDescriptor.deviceLostCallbackInfo");
_Static_assert(offsetof(lomoDeviceDescriptor, uncapturedErrorCallbackInfo) == 112, "WGPUDeviceDescriptor.uncapturedErrorCallbackInfo");
_Static_assert(sizeof(lomoRequestDeviceCallbackInfo) == 40, "WGPURequestDeviceCallbackInfo");

typedef struct { lomoChained* nextInChain; lomoStringView label; uint64_t usage; uint64_t size; uint32_t mappedAtCreation; } lomoBufferDescriptor;
_Static_assert(sizeof(lomoBufferDescriptor) == 48, "WGPUBufferDescriptor");
_Static_assert(offsetof(lomoBufferDescriptor, size) == 32, "WGPUBufferDescriptor.size");

typedef struct { lomoChained chain; lomoStringView code; } lomoShaderSourceWGSL;
typedef struct { lomoChained* nextInChain; lomoStringView label; } lomoShaderModuleDescriptor;
_Static_assert(sizeof(lomoShaderSourceWGSL) == 32, "WGPUShaderSourceWGSL");
_Static_assert(sizeof(lomoShaderModuleDescriptor) == 24, "WGPUShaderModuleDescriptor");
enum { lomoSTypeShaderSourceWGSL = 2 };

void* wgpuDeviceCreateShaderModuleTrusted(lomoDevice, const lomoShaderModuleDescriptor*, uint64_t);

// lomoCreateShaderModule compiles WGSL with the given runtime checks; errors
// reach the uncaptured-error callback.
static void* lomoCreateShaderModule(lomoDevice d, const char* label, const char* code, uint64_t checks) {
	lomoShaderSourceWGSL src;
	memset(&src, 0, sizeof src);
	src.chain.sType = lomoSTypeShaderSourceWGSL;
	src.code.data = code;
	src.code.length = strlen(code);
	lomoShaderModuleDescriptor desc;
	memset(&desc, 0, sizeof desc);
	desc.nextInChain = &src.chain;
	desc.label.data = label;
	desc.label.length = strlen(label);
	return wgpuDeviceCreateShaderModuleTrusted(d, &desc, checks);
}

lomoFuture wgpuAdapterRequestDevice(lomoAdapter, const lomoDeviceDescriptor*, lomoRequestDeviceCallbackInfo);
void* wgpuDeviceCreateBuffer(lomoDevice, const lomoBufferDescriptor*);
void wgpuBufferRelease(void*);
uint32_t wgpuDeviceGetLimits(lomoDevice, lomoLimits*);

enum { lomoCallbackModeAllowSpontaneous = 3, lomoRequestDeviceSuccess = 1 };

extern void lomoGoDeviceLost(uintptr_t id, uint32_t reason, char* msg, size_t n);
extern void lomoGoUncapturedError(uintptr_t id, uint32_t type, char* msg, size_t n);

static size_t lomoLen(lomoStringView m) {
	if (m.data == NULL) return 0;
	return m.length == SIZE_MAX ? strlen(m.data) : m.length;
}

// lomoOnLog prints one of wgpu-native's log messages to stderr, as the
// binding's callback meant to. It stays in C: the binding marks its calls
// into wgpu-native "#cgo nocallback", and wgpu-native logs from inside them.
typedef void (*lomoLogFn)(uint32_t level, lomoStringView message, void* userdata);
void wgpuSetLogCallback(lomoLogFn callback, void* userdata);
static void lomoOnLog(uint32_t level, lomoStringView m, void* u) {
	static const char* const names[] = {"Error", "Warn", "Info", "Debug", "Trace"};
	const char* name = level >= 1 && level <= 5 ? names[level - 1] : "Unknown Level";
	size_t n = lomoLen(m);
	fprintf(stderr, "[wgpu] [%s] %.*s\n", name, (int)n, n ? m.data : "");
}
static void lomoSetLogCallback(void) { wgpuSetLogCallback(lomoOnLog, NULL); }
static void lomoOnLost(lomoDevice const* d, uint32_t reason, lomoStringView m, void* u1, void* u2) {
	lomoGoDeviceLost((uintptr_t)u1, reason, (char*)m.data, lomoLen(m));
}
static void lomoOnError(lomoDevice const* d, uint32_t type, lomoStringView m, void* u1, void* u2) {
	lomoGoUncapturedError((uintptr_t)u1, type, (char*)m.data, lomoLen(m));
}

// lomoUnscopedError creates a buffer with no usage, which WebGPU rejects,
// outside any error scope: the error can only reach the uncaptured-error
// callback (a test of that path; without the callback wgpu-native aborts).
static void lomoUnscopedError(lomoDevice d) {
	lomoBufferDescriptor desc;
	memset(&desc, 0, sizeof desc);
	desc.size = 4;
	void* b = wgpuDeviceCreateBuffer(d, &desc);
	if (b) wgpuBufferRelease(b);
}

typedef struct { uint32_t status; lomoDevice device; char msg[1024]; } lomoRequestResult;

static void lomoOnDevice(uint32_t status, lomoDevice d, lomoStringView m, void* u1, void* u2) {
	lomoRequestResult* r = (lomoRequestResult*)u1;
	r->status = status;
	r->device = d;
	size_t n = lomoLen(m);
	if (n > sizeof(r->msg) - 1) n = sizeof(r->msg) - 1;
	if (n) memcpy(r->msg, m.data, n);
	r->msg[n] = 0;
}

// lomoRequestDevice requests a device with the given features and limits and
// both callbacks, identified by id. wgpu-native answers before returning.
static void lomoRequestDevice(lomoAdapter a, uintptr_t id, const uint32_t* feats, size_t nfeats, const lomoLimits* lim, lomoRequestResult* r) {
	lomoDeviceDescriptor desc;
	memset(&desc, 0, sizeof desc);
	desc.label.data = "lomo";
	desc.label.length = 4;
	desc.requiredFeatureCount = nfeats;
	desc.requiredFeatures = feats;
	desc.requiredLimits = lim;
	desc.deviceLostCallbackInfo.mode = lomoCallbackModeAllowSpontaneous;
	desc.deviceLostCallbackInfo.callback = lomoOnLost;
	desc.deviceLostCallbackInfo.userdata1 = (void*)id;
	desc.uncapturedErrorCallbackInfo.callback = lomoOnError;
	desc.uncapturedErrorCallbackInfo.userdata1 = (void*)id;
	lomoRequestDeviceCallbackInfo cb;
	memset(&cb, 0, sizeof cb);
	cb.mode = lomoCallbackModeAllowSpontaneous;
	cb.callback = lomoOnDevice;
	cb.userdata1 = r;
	wgpuAdapterRequestDevice(a, &desc, cb);
}
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/oliverbestmann/webgpu/wgpu"
)

// setLogCallback installs lomo's log callback (see the top of this file).
func setLogCallback() { C.lomoSetLogCallback() }

// handleOf returns the C handle a binding object wraps (its first field).
func handleOf[T any](obj *T) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(obj)) }

// deviceFromHandle wraps a C device handle in the binding's Device, whose
// first field is the handle; Release then drops that reference.
func deviceFromHandle(h unsafe.Pointer) *wgpu.Device {
	d := new(wgpu.Device)
	*(*unsafe.Pointer)(unsafe.Pointer(d)) = h
	return d
}

func toCLimits(l wgpu.Limits) C.lomoLimits {
	return C.lomoLimits{
		maxTextureDimension1D:                     C.uint32_t(l.MaxTextureDimension1D),
		maxTextureDimension2D:                     C.uint32_t(l.MaxTextureDimension2D),
		maxTextureDimension3D:                     C.uint32_t(l.MaxTextureDimension3D),
		maxTextureArrayLayers:                     C.uint32_t(l.MaxTextureArrayLayers),
		maxBindGroups:                             C.uint32_t(l.MaxBindGroups),
		maxBindGroupsPlusVertexBuffers:            C.uint32_t(wgpu.LimitU32Undefined),
		maxBindingsPerBindGroup:                   C.uint32_t(l.MaxBindingsPerBindGroup),
		maxDynamicUniformBuffersPerPipelineLayout: C.uint32_t(l.MaxDynamicUniformBuffersPerPipelineLayout),
		maxDynamicStorageBuffersPerPipelineLayout: C.uint32_t(l.MaxDynamicStorageBuffersPerPipelineLayout),
		maxSampledTexturesPerShaderStage:          C.uint32_t(l.MaxSampledTexturesPerShaderStage),
		maxSamplersPerShaderStage:                 C.uint32_t(l.MaxSamplersPerShaderStage),
		maxStorageBuffersPerShaderStage:           C.uint32_t(l.MaxStorageBuffersPerShaderStage),
		maxStorageTexturesPerShaderStage:          C.uint32_t(l.MaxStorageTexturesPerShaderStage),
		maxUniformBuffersPerShaderStage:           C.uint32_t(l.MaxUniformBuffersPerShaderStage),
		maxUniformBufferBindingSize:               C.uint64_t(l.MaxUniformBufferBindingSize),
		maxStorageBufferBindingSize:               C.uint64_t(l.MaxStorageBufferBindingSize),
		minUniformBufferOffsetAlignment:           C.uint32_t(l.MinUniformBufferOffsetAlignment),
		minStorageBufferOffsetAlignment:           C.uint32_t(l.MinStorageBufferOffsetAlignment),
		maxVertexBuffers:                          C.uint32_t(l.MaxVertexBuffers),
		maxBufferSize:                             C.uint64_t(l.MaxBufferSize),
		maxVertexAttributes:                       C.uint32_t(l.MaxVertexAttributes),
		maxVertexBufferArrayStride:                C.uint32_t(l.MaxVertexBufferArrayStride),
		maxInterStageShaderVariables:              C.uint32_t(l.MaxInterStageShaderVariables),
		maxColorAttachments:                       C.uint32_t(l.MaxColorAttachments),
		maxColorAttachmentBytesPerSample:          C.uint32_t(l.MaxColorAttachmentBytesPerSample),
		maxComputeWorkgroupStorageSize:            C.uint32_t(l.MaxComputeWorkgroupStorageSize),
		maxComputeInvocationsPerWorkgroup:         C.uint32_t(l.MaxComputeInvocationsPerWorkgroup),
		maxComputeWorkgroupSizeX:                  C.uint32_t(l.MaxComputeWorkgroupSizeX),
		maxComputeWorkgroupSizeY:                  C.uint32_t(l.MaxComputeWorkgroupSizeY),
		maxComputeWorkgroupSizeZ:                  C.uint32_t(l.MaxComputeWorkgroupSizeZ),
		maxComputeWorkgroupsPerDimension:          C.uint32_t(l.MaxComputeWorkgroupsPerDimension),
		maxImmediateSize:                          C.uint32_t(l.MaxImmediateSize),
	}
}

// requestDevice requests a device on the adapter with both callbacks
// reporting to the platform registered under id.
func requestDevice(a *wgpu.Adapter, id uintptr, feats []wgpu.FeatureName, lim wgpu.Limits) (*wgpu.Device, error) {
	// Everything handed to C lives in C memory (cgo's pointer rules).
	cl := (*C.lomoLimits)(C.calloc(1, C.size_t(unsafe.Sizeof(C.lomoLimits{}))))
	defer C.free(unsafe.Pointer(cl))
	*cl = toCLimits(lim)
	var cf *C.uint32_t
	if len(feats) > 0 {
		cf = (*C.uint32_t)(C.calloc(C.size_t(len(feats)), 4))
		defer C.free(unsafe.Pointer(cf))
		fs := unsafe.Slice(cf, len(feats))
		for i, f := range feats {
			fs[i] = C.uint32_t(f)
		}
	}
	r := (*C.lomoRequestResult)(C.calloc(1, C.size_t(unsafe.Sizeof(C.lomoRequestResult{}))))
	defer C.free(unsafe.Pointer(r))
	C.lomoRequestDevice(C.lomoAdapter(handleOf(a)), C.uintptr_t(id), cf, C.size_t(len(feats)), cl, r)
	if r.status != C.lomoRequestDeviceSuccess || r.device == nil {
		return nil, fmt.Errorf("status %d: %s", uint32(r.status), C.GoString(&r.msg[0]))
	}
	return deviceFromHandle(unsafe.Pointer(r.device)), nil
}

// deviceLimits reads the limits the device got.
func deviceLimits(d *wgpu.Device) (Limits, error) {
	cl := (*C.lomoLimits)(C.calloc(1, C.size_t(unsafe.Sizeof(C.lomoLimits{}))))
	defer C.free(unsafe.Pointer(cl))
	if st := C.wgpuDeviceGetLimits(C.lomoDevice(handleOf(d)), cl); st != 1 {
		return Limits{}, fmt.Errorf("get device limits: status %d", uint32(st))
	}
	return Limits{
		MaxBufferSize:                  uint64(cl.maxBufferSize),
		MaxStorageBufferBindingSize:    uint64(cl.maxStorageBufferBindingSize),
		MaxStorageBuffersPerStage:      uint32(cl.maxStorageBuffersPerShaderStage),
		MaxComputeWorkgroupStorageSize: uint32(cl.maxComputeWorkgroupStorageSize),
		MaxComputeInvocations:          uint32(cl.maxComputeInvocationsPerWorkgroup),
		MaxComputeWorkgroupSizeX:       uint32(cl.maxComputeWorkgroupSizeX),
		MaxComputeWorkgroupSizeY:       uint32(cl.maxComputeWorkgroupSizeY),
		MaxWorkgroupsPerDimension:      uint32(cl.maxComputeWorkgroupsPerDimension),
		MinUniformBufferOffsetAlign:    uint32(cl.minUniformBufferOffsetAlignment),
	}, nil
}

// checksBounds is WGPUShaderRuntimeChecks_BoundsChecks (wgpu.h): naga keeps
// every array access within its array.
const checksBounds uint64 = 1

// createShaderModule compiles WGSL source as a module with the given
// runtime checks (checksBounds: naga's bounds checks; 0: none) and never
// naga's loop bounding: by default naga gives every loop a
// counter that breaks it after 2^64 iterations (a guard against shaders
// that never end), which costs each iteration of lomo's inner loops an
// increment and a test and hides their trip counts from the driver's
// compiler. lomo's loops are bounded by their shapes. Compile errors come
// back as uncaptured errors (the caller's guard reports them).
func createShaderModule(d *wgpu.Device, label, code string, checks uint64) *wgpu.ShaderModule {
	cl, cc := C.CString(label), C.CString(code)
	defer C.free(unsafe.Pointer(cl))
	defer C.free(unsafe.Pointer(cc))
	h := C.lomoCreateShaderModule(C.lomoDevice(handleOf(d)), cl, cc, C.uint64_t(checks))
	if h == nil {
		return nil
	}
	m := new(wgpu.ShaderModule)
	*(*unsafe.Pointer)(unsafe.Pointer(m)) = h
	return m
}

// unscopedError raises a validation error outside any error scope (tests).
func (d *Device) unscopedError() { C.lomoUnscopedError(C.lomoDevice(handleOf(d.dev))) }

//export lomoGoDeviceLost
func lomoGoDeviceLost(id C.uintptr_t, reason C.uint32_t, msg *C.char, n C.size_t) {
	if p := lookupPlatform(uintptr(id)); p != nil {
		p.onLost(lostReason(uint32(reason)), C.GoStringN(msg, C.int(n)))
	}
}

//export lomoGoUncapturedError
func lomoGoUncapturedError(id C.uintptr_t, typ C.uint32_t, msg *C.char, n C.size_t) {
	if p := lookupPlatform(uintptr(id)); p != nil {
		p.onError(errorType(uint32(typ)), C.GoStringN(msg, C.int(n)))
	}
}

// lostReason and errorType name webgpu.h's WGPUDeviceLostReason and
// WGPUErrorType values.
func lostReason(r uint32) string {
	switch r {
	case 2:
		return "destroyed"
	case 3:
		return "callback cancelled"
	case 4:
		return "failed creation"
	}
	return "unknown"
}

func errorType(t uint32) string {
	switch t {
	case 2:
		return "validation"
	case 3:
		return "out-of-memory"
	case 4:
		return "internal"
	}
	return "unknown"
}
