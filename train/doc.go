// Package train runs fine-tuning: the Trainer (epochs, evaluation,
// checkpoints, resume, metric events, one loop for the native and the
// browser build) and the memory planner behind `lomo plan`.
//
// # metrics.jsonl
//
// A run appends one JSON object per line to output_dir/metrics.jsonl:
//
//	{"step":3,"loss":2.31,"lr":0.02,"grad_norm":1.7,"clip_coef":0.58,"loss_scale":32768,"skipped":false,"tokens":61,"epoch":0.25,"tokens_per_sec":410,"memory":{...}}
//	{"step":3,"eval":{"task":"copa","metric":"acc","value":0.55,"n":20,"step":3}}
//	{"event":"resume","step":1,"checkpoint":"out/checkpoint-1"}
//	{"event":"error","step":2,"error":"train: step 2 failed; ..."}
//
// Every step line has every field. JSON has no NaN or infinity, so a
// non-finite figure (the infinite gradient norm of a step skipped on
// overflow, a NaN loss) is the string "NaN", "Inf" or "-Inf", as in the
// monitor's events; Python's float() and Go's strconv.ParseFloat read them.
// A resumed run first writes a resume line: step lines above it with a
// step beyond its step are from the interrupted run, whose later steps
// were not saved, and are repeated below it. A run that fails ends with
// an error line.
package train
