// Package cache finds models in the local Hugging Face Hub cache, the folder
// that huggingface_hub's downloads (`hf download org/name`,
// `from_pretrained`, `snapshot_download`) fill, so that a model can be
// named by its Hub id instead of a path:
//
//	dir, err := cache.Resolve("org/name@main")
//
// Resolve never touches the network; a model not in the cache is an error
// that names the command that downloads it.
//
// The layout, as huggingface_hub lays it out (src/huggingface_hub,
// constants.py and file_download.py, checked at commit ee0a4510, 2026-08):
//
//	<cache>/models--org--name/refs/<revision>       a file holding a 40-hex commit hash
//	<cache>/models--org--name/snapshots/<commit>/   the files of that commit, symlinks ...
//	<cache>/models--org--name/blobs/<hash>          ... to these, named by git-sha1 or sha256
//
// The rules, and where huggingface_hub states them:
//
//   - <cache> is HF_HUB_CACHE, else the legacy HUGGINGFACE_HUB_CACHE, else
//     HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
//     ~/.cache/huggingface/hub, with ~ and $VARS expanded (constants.py:
//     HF_HOME, default_cache_path, HUGGINGFACE_HUB_CACHE, HF_HUB_CACHE).
//   - The repository folder is "models" and the id's parts joined by "--"
//     (file_download.py: repo_folder_name, constants.REPO_ID_SEPARATOR).
//   - A revision matching ^[0-9a-f]{40}$ names snapshots/<revision>
//     directly; any other (branch, tag, truncated hash, "refs/pr/1") is read
//     from refs/<revision> (file_download.py: REGEX_COMMIT_HASH,
//     _hf_hub_download_to_cache_dir, try_to_load_from_cache,
//     _cache_commit_hash_for_specific_revision). The default is "main".
//   - Snapshot files are relative symlinks into blobs/; where symlinks are
//     not supported (Windows without developer mode) they are plain copies
//     (file_download.py: _create_symlink). Both are read the same way.
//   - A valid id is "name" or "namespace/name": letters, digits, "-", "_"
//     and ".", starting and ending with a letter, digit or "_", the name
//     1-96 characters, without "--" or ".." and not ending in ".git"
//     (utils/_validators.py: validate_repo_id).
//
// The current command-line downloader is `hf download` (huggingface_hub's
// `hf` entry point; `huggingface-cli` is deprecated and no longer works,
// cli/deprecated_cli.py).
package cache
