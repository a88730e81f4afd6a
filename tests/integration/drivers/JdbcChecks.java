// pgJDBC (Debian's libpostgresql-jdbc-java) checks for transaction-mode pooling, driven by
// drivers-jdbc.test.ts. Run as a single-file source program, no build step:
//   java -Duser.timezone=America/Sao_Paulo -cp /usr/share/java/postgresql.jar JdbcChecks.java CHECK
// Connection parameters come from PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD. Prints exactly one
// JSON object on stdout: the observations of CHECK, or {"error": {...}} when the driver threw; a
// watchdog turns a check that does not finish into such an error.

import java.sql.BatchUpdateException;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Callable;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import org.postgresql.PGStatement;

public class JdbcChecks {
  static final long WATCHDOG_MS =
      (long) (Double.parseDouble(System.getenv().getOrDefault("DRIVER_WATCHDOG_SECONDS", "20")) * 1000);
  static volatile String phase = "start";
  static final Object OUT = new Object();
  static boolean emitted = false;

  /** prepareThreshold=1: named server-side statements from a statement's first execution. */
  static Connection connect() throws SQLException {
    return connect(1);
  }

  /** prepareThreshold=0 never uses named server-side statements, for checks about something else. */
  static Connection connect(int prepareThreshold) throws SQLException {
    Properties p = new Properties();
    p.setProperty("user", System.getenv("PGUSER"));
    p.setProperty("password", System.getenv("PGPASSWORD"));
    p.setProperty("prepareThreshold", String.valueOf(prepareThreshold));
    p.setProperty("connectTimeout", "5");
    p.setProperty("loginTimeout", "5");
    p.setProperty("socketTimeout", "15");
    p.setProperty("sslmode", "disable");
    p.setProperty("ApplicationName", "drivers-jdbc");
    String url =
        "jdbc:postgresql://" + System.getenv("PGHOST") + ":" + System.getenv("PGPORT") + "/" + System.getenv("PGDATABASE");
    return DriverManager.getConnection(url, p);
  }

  // --- prepared: one PreparedStatement executed 25 times on each of 6 connections ---------------------

  static Object checkPrepared() throws Exception {
    int conns = 6, iterations = 25;
    CyclicBarrier barrier = new CyclicBarrier(conns);
    List<Callable<Object>> tasks = new ArrayList<>();
    for (int k = 0; k < conns; k++) {
      final int owner = k;
      tasks.add(() -> {
        try (Connection c = connect();
            PreparedStatement calc = c.prepareStatement("select ?::int * 1000 + ?::int as v, pg_backend_pid() as pid");
            PreparedStatement insert = c.prepareStatement("insert into jdbc_items (owner, n) values (?, ?)");
            PreparedStatement count = c.prepareStatement("select count(*), coalesce(sum(n), 0) from jdbc_items where owner = ?")) {
          // pgJDBC names a statement at its first execution, so these come before calc/insert/count.
          warmUp(c, owner);
          barrier.await(10, TimeUnit.SECONDS);
          List<String> mismatches = new ArrayList<>();
          List<Object> pids = new ArrayList<>();
          long total = 0;
          for (int i = 0; i < iterations; i++) {
            calc.setInt(1, owner);
            calc.setInt(2, i);
            try (ResultSet rs = calc.executeQuery()) {
              rs.next();
              if (rs.getInt("v") != owner * 1000 + i) mismatches.add("iteration " + i + ": v=" + rs.getInt("v"));
              pids.add(rs.getInt("pid"));
            }
            insert.setInt(1, owner);
            insert.setInt(2, i);
            int updated = insert.executeUpdate();
            if (updated != 1) mismatches.add("iteration " + i + ": insert count " + updated);
            total += i;
            count.setInt(1, owner);
            try (ResultSet rs = count.executeQuery()) {
              rs.next();
              if (rs.getLong(1) != i + 1 || rs.getLong(2) != total) {
                mismatches.add("iteration " + i + ": count/sum " + rs.getLong(1) + "/" + rs.getLong(2));
              }
            }
            Thread.sleep(ThreadLocalRandom.current().nextInt(3));
          }
          Map<String, Object> r = new LinkedHashMap<>();
          r.put("conn", owner);
          r.put("mismatches", mismatches);
          r.put("pids", pids);
          r.put("serverPrepared", Arrays.asList(
              calc.unwrap(PGStatement.class).isUseServerPrepare(),
              insert.unwrap(PGStatement.class).isUseServerPrepare(),
              count.unwrap(PGStatement.class).isUseServerPrepare()));
          return r;
        } catch (Exception e) {
          barrier.reset();
          throw e;
        }
      });
    }
    phase = "prepared";
    return Map.of("conns", runAll(tasks));
  }

  // --- batch: addBatch/executeBatch on 3 connections, and a batch that fails half-way ----------------

  static Object checkBatch() throws Exception {
    List<Callable<Object>> tasks = new ArrayList<>();
    for (int k = 0; k < 3; k++) {
      final int owner = k;
      tasks.add(() -> {
        try (Connection c = connect()) {
          Map<String, Object> r = new LinkedHashMap<>();
          r.put("conn", owner);
          try (PreparedStatement ps = c.prepareStatement("insert into jdbc_batch (id, owner, note) values (?, ?, ?)")) {
            for (int i = 0; i < 200; i++) {
              ps.setInt(1, owner * 100000 + i);
              ps.setInt(2, owner);
              ps.setString(3, "row " + i);
              ps.addBatch();
            }
            int[] counts = ps.executeBatch();
            r.put("batchSize", counts.length);
            r.put("batchUpdated", Arrays.stream(counts).sum());
          }
          r.put("rowsAfterBatch", count(c, "select count(*) from jdbc_batch where owner = " + owner));
          // Second batch: row 6 repeats an id of the first batch. The batch runs in one implicit
          // transaction, so none of its rows stay, and the connection goes on.
          try (PreparedStatement ps = c.prepareStatement("insert into jdbc_batch (id, owner, note) values (?, ?, ?)")) {
            for (int i = 0; i < 10; i++) {
              ps.setInt(1, i == 5 ? owner * 100000 : owner * 100000 + 1000 + i);
              ps.setInt(2, owner);
              ps.setString(3, "second " + i);
              ps.addBatch();
            }
            try {
              ps.executeBatch();
              r.put("failedBatchError", null);
            } catch (BatchUpdateException e) {
              SQLException next = e.getNextException();
              r.put("failedBatchError", next != null ? next.getSQLState() : e.getSQLState());
            }
          }
          r.put("rowsAfterFailedBatch", count(c, "select count(*) from jdbc_batch where owner = " + owner));
          return r;
        }
      });
    }
    phase = "batch";
    return Map.of("conns", runAll(tasks));
  }

  // --- transactions: setAutoCommit(false) with commit, rollback and a savepoint ----------------------

  static Object checkTransactions() throws Exception {
    List<Callable<Object>> tasks = new ArrayList<>();
    for (int k = 0; k < 4; k++) {
      final int owner = k;
      tasks.add(() -> {
        try (Connection c = connect();
            PreparedStatement insert = c.prepareStatement("insert into jdbc_tx (owner, i, outcome) values (?, ?, ?)");
            PreparedStatement pid = c.prepareStatement("select pg_backend_pid()")) {
          List<String> mismatches = new ArrayList<>();
          List<Object> pids = new ArrayList<>();
          c.setAutoCommit(false);
          for (int i = 0; i < 5; i++) {
            int first = intOf(pid);
            insert(insert, owner, i, "commit");
            if (intOf(pid) != first) mismatches.add("iteration " + i + ": server changed inside a transaction");
            c.commit();
            pids.add(first);

            insert(insert, owner, i, "rollback");
            c.rollback();

            insert(insert, owner, i, "kept");
            Savepoint sp = c.setSavepoint();
            insert(insert, owner, i, "undone");
            c.rollback(sp);
            c.commit();
            Thread.sleep(ThreadLocalRandom.current().nextInt(3));
          }
          c.setAutoCommit(true);
          Map<String, Object> r = new LinkedHashMap<>();
          r.put("conn", owner);
          r.put("mismatches", mismatches);
          r.put("pids", pids);
          return r;
        }
      });
    }
    phase = "transactions";
    List<Object> conns = runAll(tasks);
    phase = "transactions: outcome";
    Map<String, Object> outcome = new LinkedHashMap<>();
    try (Connection c = connect();
        Statement st = c.createStatement();
        ResultSet rs = st.executeQuery("select outcome, count(*) from jdbc_tx group by outcome order by outcome")) {
      while (rs.next()) outcome.put(rs.getString(1), rs.getLong(2));
    }
    return Map.of("conns", conns, "outcome", outcome);
  }

  // --- timezone: SET TIME ZONE per connection, with default clients in between -----------------------

  static Object checkTimezone() throws Exception {
    String[][] specs = {
      {"a", "Asia/Kolkata"}, {"b", "Pacific/Auckland"}, {"n1", null}, {"n2", null}, {"n3", null}, {"n4", null},
    };
    CyclicBarrier barrier = new CyclicBarrier(specs.length);
    List<Callable<Object>> tasks = new ArrayList<>();
    for (String[] spec : specs) {
      tasks.add(() -> {
        try (Connection c = connect(0); Statement st = c.createStatement()) {
          if (spec[1] != null) st.execute("SET TIME ZONE '" + spec[1] + "'");
          barrier.await(10, TimeUnit.SECONDS);
          List<Object> seen = new ArrayList<>();
          List<Object> pids = new ArrayList<>();
          for (int round = 0; round < 12; round++) {
            boolean inTx = round % 2 == 1;
            if (inTx) c.setAutoCommit(false);
            String tz, hour;
            int pid;
            try (ResultSet rs = st.executeQuery("show timezone")) {
              rs.next();
              tz = rs.getString(1);
            }
            try (ResultSet rs = st.executeQuery(
                "select to_char(timestamptz '2024-01-01 00:00:00+00', 'HH24:MI'), pg_backend_pid()")) {
              rs.next();
              hour = rs.getString(1);
              pid = rs.getInt(2);
            }
            if (inTx) {
              c.commit();
              c.setAutoCommit(true);
            }
            seen.add(List.of(tz, hour));
            pids.add(pid);
            Thread.sleep(ThreadLocalRandom.current().nextInt(3));
          }
          Map<String, Object> r = new LinkedHashMap<>();
          r.put("name", spec[0]);
          r.put("seen", seen);
          r.put("pids", pids);
          return r;
        } catch (Exception e) {
          barrier.reset();
          throw e;
        }
      });
    }
    phase = "timezone";
    return Map.of("conns", runAll(tasks), "jvmTimeZone", java.util.TimeZone.getDefault().getID());
  }

  // --- helpers ---------------------------------------------------------------------------------------

  /**
   * pgJDBC names statements S_<n> with a counter per connection. Client k first prepares k other
   * statements, so the same name means different queries on different clients.
   */
  static void warmUp(Connection c, int k) throws SQLException {
    for (int j = 0; j < k; j++) {
      try (PreparedStatement ps = c.prepareStatement("select ?::int + " + j)) {
        ps.setInt(1, 100);
        try (ResultSet rs = ps.executeQuery()) {
          rs.next();
          if (rs.getInt(1) != 100 + j) throw new IllegalStateException("warm-up " + j + ": " + rs.getInt(1));
        }
      }
    }
  }

  static void insert(PreparedStatement ps, int owner, int i, String outcome) throws SQLException {
    ps.setInt(1, owner);
    ps.setInt(2, i);
    ps.setString(3, outcome);
    ps.executeUpdate();
  }

  static int intOf(PreparedStatement ps) throws SQLException {
    try (ResultSet rs = ps.executeQuery()) {
      rs.next();
      return rs.getInt(1);
    }
  }

  static long count(Connection c, String sql) throws SQLException {
    try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery(sql)) {
      rs.next();
      return rs.getLong(1);
    }
  }

  /** Runs the tasks on their own threads; returns their results or throws the first failure. */
  static List<Object> runAll(List<Callable<Object>> tasks) throws Exception {
    ExecutorService pool = Executors.newFixedThreadPool(tasks.size(), r -> {
      Thread t = new Thread(r);
      t.setDaemon(true);
      return t;
    });
    try {
      List<Future<Object>> futures = new ArrayList<>();
      for (Callable<Object> t : tasks) futures.add(pool.submit(t));
      List<Object> out = new ArrayList<>();
      Exception first = null;
      for (Future<Object> f : futures) {
        try {
          out.add(f.get());
        } catch (java.util.concurrent.ExecutionException e) {
          Exception cause = e.getCause() instanceof Exception ? (Exception) e.getCause() : e;
          // A barrier broken by another thread's failure is not the interesting error.
          if (first == null || first instanceof java.util.concurrent.BrokenBarrierException) first = cause;
        }
      }
      if (first != null) throw first;
      return out;
    } finally {
      pool.shutdownNow();
    }
  }

  static void emit(Object result) {
    synchronized (OUT) {
      if (emitted) return;
      emitted = true;
      System.out.println(json(result));
      System.out.flush();
    }
  }

  static Map<String, Object> errorOf(Throwable e) {
    Map<String, Object> err = new LinkedHashMap<>();
    err.put("type", e.getClass().getSimpleName());
    err.put("sqlstate", e instanceof SQLException ? ((SQLException) e).getSQLState() : null);
    err.put("message", String.valueOf(e.getMessage()));
    err.put("phase", phase);
    StringBuilder trace = new StringBuilder();
    for (StackTraceElement el : e.getStackTrace()) {
      if (trace.length() > 1500) break;
      trace.append(el).append('\n');
    }
    err.put("trace", trace.toString());
    return err;
  }

  static String json(Object o) {
    if (o == null) return "null";
    if (o instanceof String) {
      StringBuilder b = new StringBuilder("\"");
      for (char ch : ((String) o).toCharArray()) {
        switch (ch) {
          case '"' -> b.append("\\\"");
          case '\\' -> b.append("\\\\");
          case '\n' -> b.append("\\n");
          case '\r' -> b.append("\\r");
          case '\t' -> b.append("\\t");
          default -> {
            if (ch < 0x20) b.append(String.format("\\u%04x", (int) ch));
            else b.append(ch);
          }
        }
      }
      return b.append('"').toString();
    }
    if (o instanceof Number || o instanceof Boolean) return o.toString();
    if (o instanceof Map<?, ?> m) {
      List<String> parts = new ArrayList<>();
      for (Map.Entry<?, ?> e : m.entrySet()) parts.add(json(String.valueOf(e.getKey())) + ":" + json(e.getValue()));
      return "{" + String.join(",", parts) + "}";
    }
    if (o instanceof List<?> l) {
      List<String> parts = new ArrayList<>();
      for (Object x : l) parts.add(json(x));
      return "[" + String.join(",", parts) + "]";
    }
    return json(o.toString());
  }

  @SuppressWarnings("unchecked")
  public static void main(String[] args) {
    Thread watchdog = new Thread(() -> {
      try {
        Thread.sleep(WATCHDOG_MS);
      } catch (InterruptedException e) {
        return;
      }
      emit(Map.of("error", Map.of("type", "Timeout", "message", "no result after " + WATCHDOG_MS / 1000 + " s (phase: " + phase + ")")));
      Runtime.getRuntime().halt(0);
    });
    watchdog.setDaemon(true);
    watchdog.start();
    Map<String, Object> result = new LinkedHashMap<>();
    try {
      Object r = switch (args[0]) {
        case "prepared" -> checkPrepared();
        case "batch" -> checkBatch();
        case "transactions" -> checkTransactions();
        case "timezone" -> checkTimezone();
        default -> throw new IllegalArgumentException("unknown check " + args[0]);
      };
      result.putAll((Map<String, Object>) r);
    } catch (Throwable e) {
      result.put("error", errorOf(e));
    }
    result.put("driver", "pgJDBC " + org.postgresql.util.DriverInfo.DRIVER_VERSION);
    emit(result);
    // Worker threads may still be blocked on a connection that never answered.
    Runtime.getRuntime().halt(0);
  }
}
