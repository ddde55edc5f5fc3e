// Package peft reads and writes LoRA adapters in the layout of Hugging
// Face PEFT: adapter_config.json (a LoraConfig: peft_type "LORA", r,
// lora_alpha, lora_dropout, target_modules, bias "none", task_type
// "CAUSAL_LM", base_model_name_or_path) and adapter_model.safetensors, whose
// tensors are named as PEFT's get_peft_model_state_dict leaves them for a
// LLaMA model: base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight
// (r × in) and ...lora_B.weight (out × r). The adapted weight is
// W + scale·B·A with scale = lora_alpha/r (lora_alpha/√r with use_rslora).
//
// Only what lomo computes is accepted: LoRA on the linear layers of the
// decoder blocks, no bias, no DoRA, no per-module rank or alpha patterns,
// no modules_to_save; anything else is an error that names the field.
package peft
