package safetensors

// CloseTemp closes a Writer's temporary file behind its back, so that tests
// can make its next write fail.
func CloseTemp(w *Writer) error { return w.tmp.Close() }

// ChunkBytes is the size of the buffer tensors are streamed through.
const ChunkBytes = chunkBytes
