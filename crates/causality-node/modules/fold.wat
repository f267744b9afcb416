;; An example module for `wasm` work: folds its input into an 8-byte FNV-1a hash.
;;
;; The contract every module follows (see the crate README): no imports, no floating
;; point; exports `memory`, `alloc(len) -> ptr`, and functions `(ptr, len) -> i64` that
;; return `out_ptr << 32 | out_len`. The input is a list of frames (u32 little-endian
;; length, then bytes): the work's argument, then each predecessor's output in order.
(module
  (memory (export "memory") 1)
  ;; Bump allocator: memory below 1024 holds the output.
  (global $heap (mut i32) (i32.const 1024))

  (func (export "alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $len)))
    ;; Grow until the new top fits; trap when memory cannot grow.
    (block $fits
      (loop $grow
        (br_if $fits
          (i32.le_u (global.get $heap) (i32.shl (memory.size) (i32.const 16))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1))
          (then unreachable))
        (br $grow)))
    (local.get $ptr))

  ;; FNV-1a (64-bit) over every input byte, frame lengths included; 8 bytes out at 0.
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (local $hash i64)
    (local $end i32)
    (local.set $hash (i64.const 0xcbf29ce484222325))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $ptr) (local.get $end)))
        (local.set $hash
          (i64.mul
            (i64.xor (local.get $hash) (i64.load8_u (local.get $ptr)))
            (i64.const 0x100000001b3)))
        (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
        (br $next)))
    (i64.store (i32.const 0) (local.get $hash))
    (i64.const 8))

  ;; Never returns: runs until its fuel is gone.
  (func (export "spin") (param i32 i32) (result i64)
    (loop $forever (br $forever))
    (i64.const 0))
)
