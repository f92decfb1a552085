// Thread-start glue: the dozen frames of libc and the Rust (or Go, or
// Java) runtime above every frame of the program — `_start`, `clone3`,
// `start_thread`, `thread_start`, `catch_unwind`,
// `__rust_begin_short_backtrace`, `lang_start`… Hidden, a graph starts at
// the program's own first frame. Only the run of glue at the root end of
// a stack goes: a frame below the first frame that is not glue is always
// kept, whatever its name.

// Whole frame names, as symbolizers write them (both of rustc's
// demanglings: `std::sys::pal::unix::thread::Thread::new::thread_start`
// and `<std::sys::thread::unix::Thread>::new::thread_start`).
const GLUE = [
  // libc, musl, bionic: process and thread entry.
  /^_start(_c)?$/, /^__libc_start_main(_impl|_alias_\d+)?$/, /^__libc_start_call_main$/,
  /^(__GI_)?_*clone3?$/, /^start_thread$/, /^thread_start$/, /^__(pthread_)?start_thread$/,
  // The C `main` rustc writes around the program's `main`.
  /^main$/,
  // Rust's thread spawn and process start.
  /^<?std::sys(_common)?::.*thread_start$/,
  /^<alloc::boxed::Box<.*> as core::ops::function::FnOnce<.*>>::call_once$/,
  /^<core::panic::unwind_safe::AssertUnwindSafe<.*> as core::ops::function::FnOnce<.*>>::call_once$/,
  /^core::ops::function::FnOnce::call_once(\{\{vtable\.shim\}\})?$/,
  /^std::thread::.*spawn_unchecked_?(::\{\{closure\}\})*$/,
  /^std::panic::catch_unwind$/, /^std::panicking::(try|catch_unwind)(::do_call)?$/, /^__rust_try$/,
  /^std::(sys_common|sys)::backtrace::__rust_begin_short_backtrace$/,
  /^std::rt::lang_start(_internal)?(::\{\{closure\}\})*$/,
  // Go and Java.
  /^runtime\.goexit$/, /^runtime\.main$/, /^java\.lang\.Thread\.run(With)?$/,
];

export const isGlue = (name) => GLUE.some((re) => re.test(name));

// `frames` (root first) without the glue at its root end.
export function stripGlue(frames) {
  let i = 0;
  while (i < frames.length && isGlue(frames[i])) i++;
  return frames.slice(i);
}

const copy = (n) => ({ ...n, children: n.children.map(copy) });

// `dst` (owned) plus `src`, merged frame by frame.
function mergeInto(dst, src) {
  dst.total += src.total; dst.self += src.self;
  if (src.samples !== undefined) dst.samples = (dst.samples || 0) + src.samples;
  for (const k of src.children) {
    const d = dst.children.find((c) => c.name === k.name);
    if (d) mergeInto(d, k); else dst.children.push(copy(k));
  }
}

// A tree ({name, self, total, samples?, children}) whose root's children
// are the first frames below the glue: glue frames hanging from the root,
// and glue below them, are lifted out, and what they lead to is merged by
// name (two spawn paths into one worker loop are one frame). Time spent
// in glue itself stays on the root, as its self. `root` is not changed.
export function hideGlue(root) {
  const out = { ...root, children: [] };
  const owned = new Set();
  const add = (k) => {
    const i = out.children.findIndex((c) => c.name === k.name);
    if (i < 0) { out.children.push(k); return; }
    if (!owned.has(out.children[i])) { out.children[i] = copy(out.children[i]); owned.add(out.children[i]); }
    mergeInto(out.children[i], k);
  };
  const lift = (n) => {
    out.self += n.self;
    for (const k of n.children) (isGlue(k.name) ? lift(k) : add(k));
  };
  for (const k of root.children) (isGlue(k.name) ? lift(k) : add(k));
  out.children.sort((a, b) => b.total - a.total);
  return out;
}

// The path (frame names from the root's child down) `path` of the tree
// without glue, found again in the tree with it: the widest run of glue
// that leads to its first frame, then the path.
export function withGlue(root, path) {
  if (!path) return path;
  const first = path.split(";")[0];
  let best = null;
  const visit = (n, above) => {
    for (const k of n.children) {
      if (k.name === first && (!best || k.total > best.total)) best = { total: k.total, above };
      if (isGlue(k.name)) visit(k, above.concat(k.name));
    }
  };
  visit(root, []);
  return best ? best.above.concat(path).join(";") : path;
}

// The same, the other way: `path` of the tree with glue, without it.
export const withoutGlue = (path) => stripGlue((path || "").split(";").filter(Boolean)).join(";");
