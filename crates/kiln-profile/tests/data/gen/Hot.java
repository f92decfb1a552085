// Known hot methods for Kiln's JFR golden file: each worker spends its CPU
// 60/30/10 in burnA/burnB/burnC; one thread allocates; two contend on a lock.
public class Hot {
    static volatile long sink;
    static final Object LOCK = new Object();

    static long spin(long n) {
        long x = 0;
        for (long i = 0; i < n; i++) { x = x * 6364136223846793005L + i; }
        return x;
    }
    static long burnA() { return spin(600_000); }
    static long burnB() { return spin(300_000); }
    static long burnC() { return spin(100_000); }

    static void work(long until) {
        while (System.nanoTime() < until) { sink += burnA() + burnB() + burnC(); }
    }

    static void allocate(long until) {
        while (System.nanoTime() < until) {
            byte[][] keep = new byte[64][];
            for (int i = 0; i < keep.length; i++) keep[i] = new byte[16 * 1024];
            sink += keep.length;
            try { Thread.sleep(1); } catch (InterruptedException e) { return; }
        }
    }

    static void contend(long until) {
        while (System.nanoTime() < until) {
            synchronized (LOCK) { sink += spin(2_000_000); }
        }
    }

    public static void main(String[] args) throws Exception {
        long seconds = args.length > 0 ? Long.parseLong(args[0]) : 8;
        long until = System.nanoTime() + seconds * 1_000_000_000L;
        Thread[] ts = {
            new Thread(() -> work(until), "worker-1"),
            new Thread(() -> allocate(until), "allocator"),
            new Thread(() -> contend(until), "locker-1"),
            new Thread(() -> contend(until), "locker-2"),
        };
        for (Thread t : ts) t.start();
        work(until);
        for (Thread t : ts) t.join();
    }
}
