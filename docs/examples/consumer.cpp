// consumer.cpp: a complete C++ consumer of the perception wire format, schema 1.3 (docs/wire-format.md).
//
// Build (Debian/Ubuntu: apt-get install g++ libzmq3-dev libmsgpack-dev libzstd-dev liblz4-dev):
//   g++ -std=c++17 -O2 consumer.cpp -o consumer -lzmq -lmsgpackc -lzstd -llz4
//   (msgpack-c 6 and later name its library -lmsgpack-c: use `pkg-config --libs msgpack-c`)
// Run:
//   ./consumer tcp://127.0.0.1:5555 [topic=perception] [max_messages=0 (no limit)] [timeout_s=10]
//
// Prints one line per class table, per label message and per track, and one at the end of the stream.
// For every track matched this frame it counts the pixels of its mask in the instance map (pixel value
// == the track's idx) and compares them with the track's area. Exit status: 0 at the end of the stream
// or after max_messages, 2 when nothing arrived for timeout_s seconds, 1 on a fatal error. A malformed
// message is reported and skipped. The preview JPEG is not decoded here (libjpeg or OpenCV would).
#include <lz4frame.h>
#include <msgpack.h>
#include <zmq.h>
#include <zstd.h>

#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <stdexcept>
#include <string>
#include <vector>  // decoded parts

namespace {

constexpr int64_t kMajor = 1;                    // the wire schema major version this program implements
constexpr uint64_t kMaxPixels = 7680ull * 4320;  // refuse larger maps before allocating (8K UHD)
constexpr size_t kMaxHeaderBytes = 1 << 20;

struct Malformed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------- msgpack access (msgpack-c's C API)
struct Header {  // owns one unpacked msgpack object
  msgpack_unpacked u;
  Header(const void* data, size_t size) {
    msgpack_unpacked_init(&u);
    if (size > kMaxHeaderBytes) throw Malformed("header too large");
    size_t off = 0;
    if (msgpack_unpack_next(&u, static_cast<const char*>(data), size, &off) != MSGPACK_UNPACK_SUCCESS ||
        off != size)
      throw Malformed("header is not one msgpack object");
    if (u.data.type != MSGPACK_OBJECT_MAP) throw Malformed("header is not a map");
  }
  ~Header() { msgpack_unpacked_destroy(&u); }
  Header(const Header&) = delete;
  Header& operator=(const Header&) = delete;
  const msgpack_object& root() const { return u.data; }
};

// the value of `key` in map `m`, or nullptr; unknown keys are simply never asked for
const msgpack_object* get(const msgpack_object& m, const char* key) {
  if (m.type != MSGPACK_OBJECT_MAP) throw Malformed(std::string("not a map looking for ") + key);
  size_t n = std::strlen(key);
  for (uint32_t i = 0; i < m.via.map.size; ++i) {
    const msgpack_object& k = m.via.map.ptr[i].key;
    if (k.type == MSGPACK_OBJECT_STR && k.via.str.size == n && std::memcmp(k.via.str.ptr, key, n) == 0)
      return &m.via.map.ptr[i].val;
  }
  return nullptr;
}

const msgpack_object& need(const msgpack_object& m, const char* key) {
  const msgpack_object* v = get(m, key);
  if (!v) throw Malformed(std::string("missing key ") + key);
  return *v;
}

int64_t as_int(const msgpack_object& o, const char* what) {
  if (o.type == MSGPACK_OBJECT_POSITIVE_INTEGER && o.via.u64 <= uint64_t(INT64_MAX)) return int64_t(o.via.u64);
  if (o.type == MSGPACK_OBJECT_NEGATIVE_INTEGER) return o.via.i64;
  throw Malformed(std::string(what) + " is not an integer");
}

int64_t int_or(const msgpack_object& m, const char* key, int64_t dflt) {
  const msgpack_object* v = get(m, key);
  return v ? as_int(*v, key) : dflt;
}

double as_num(const msgpack_object& o, const char* what) {  // floats may also come as integers
  if (o.type == MSGPACK_OBJECT_FLOAT32 || o.type == MSGPACK_OBJECT_FLOAT64) return o.via.f64;
  return double(as_int(o, what));
}

std::string as_str(const msgpack_object& o, const char* what) {
  if (o.type != MSGPACK_OBJECT_STR) throw Malformed(std::string(what) + " is not a string");
  return std::string(o.via.str.ptr, o.via.str.size);
}

std::string str_or(const msgpack_object& m, const char* key, const char* dflt) {
  const msgpack_object* v = get(m, key);
  return v ? as_str(*v, key) : dflt;
}

const msgpack_object_array& as_array(const msgpack_object& o, const char* what) {
  if (o.type != MSGPACK_OBJECT_ARRAY) throw Malformed(std::string(what) + " is not an array");
  return o.via.array;
}

// ---------------------------------------------------------------- data parts
// The part's bytes decoded to exactly `expected` bytes (raw: the frame itself, used in place).
std::vector<uint8_t> decode_part(const zmq_msg_t& frame, const std::string& enc, size_t expected) {
  const auto* src = static_cast<const uint8_t*>(zmq_msg_data(const_cast<zmq_msg_t*>(&frame)));
  size_t n = zmq_msg_size(const_cast<zmq_msg_t*>(&frame));
  std::vector<uint8_t> dst;
  if (enc == "raw") {
    if (n != expected) throw Malformed("raw part has the wrong size");
    dst.assign(src, src + n);  // a real consumer would read src in place
  } else if (enc == "zstd") {
    if (ZSTD_getFrameContentSize(src, n) != expected) throw Malformed("zstd content size differs from the shape");
    dst.resize(expected);
    size_t r = ZSTD_decompress(dst.data(), expected, src, n);
    if (ZSTD_isError(r) || r != expected) throw Malformed("bad zstd frame");
  } else if (enc == "lz4") {
    LZ4F_dctx* ctx = nullptr;
    if (LZ4F_isError(LZ4F_createDecompressionContext(&ctx, LZ4F_VERSION))) throw std::runtime_error("lz4 context");
    LZ4F_frameInfo_t info{};
    size_t in = n, hint = LZ4F_getFrameInfo(ctx, &info, src, &in);
    if (LZ4F_isError(hint) || info.contentSize != expected) {
      LZ4F_freeDecompressionContext(ctx);
      throw Malformed("lz4 frame header missing or its content size differs from the shape");
    }
    dst.resize(expected);
    size_t out = 0;
    while (hint != 0 && in < n) {  // hint 0: the frame is complete
      size_t dn = expected - out, sn = n - in;
      hint = LZ4F_decompress(ctx, dst.data() + out, &dn, src + in, &sn, nullptr);
      if (LZ4F_isError(hint)) break;
      out += dn;
      in += sn;
    }
    LZ4F_freeDecompressionContext(ctx);
    if (LZ4F_isError(hint) || hint != 0 || out != expected || in != n) throw Malformed("bad lz4 frame");
  } else {
    throw Malformed("unknown encoding " + enc);
  }
  return dst;
}

int64_t now_wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}

// ---------------------------------------------------------------- the three message kinds
struct State {
  bool have_session = false;
  int64_t session = 0;  // the publisher session followed
  bool have_last = false;
  int64_t last_seq = 0;
  uint64_t received = 0, gaps = 0, ignored = 0;
};

// Follow a session: the first class table or label message sets it; a label message of another session
// is a restarted publisher. Class tables and end-of-stream messages of any other session are ignored.
bool same_session(State& st, int64_t sid, bool label_message) {
  if (!st.have_session || (label_message && sid != st.session)) {
    if (st.have_session) std::printf("restart session=%" PRId64 "\n", sid);
    st.have_session = true;
    st.session = sid;
    st.have_last = false;
  }
  return sid == st.session;
}

void on_classes(State& st, const msgpack_object& h) {
  int64_t sid = int_or(h, "sid", 0);
  if (!same_session(st, sid, false)) {
    ++st.ignored;
    std::printf("ignored classes session=%" PRId64 "\n", sid);
    return;
  }
  const auto& classes = as_array(need(h, "classes"), "classes");
  std::printf("classes cv=%s n=%u", str_or(h, "cv", "").c_str(), classes.size);
  for (uint32_t i = 0; i < classes.size; ++i)
    std::printf(" %" PRId64 ":%s", as_int(need(classes.ptr[i], "id"), "id"),
                as_str(need(classes.ptr[i], "name"), "name").c_str());
  std::printf("\n");
}

bool on_end(State& st, const msgpack_object& h) {  // true: the stream we follow has ended
  int64_t sid = int_or(h, "sid", 0);
  if (!st.have_session || sid != st.session) {
    ++st.ignored;
    std::printf("ignored end session=%" PRId64 "\n", sid);
    return false;
  }
  int64_t last_seq = as_int(need(h, "last_seq"), "last_seq");
  int64_t lost_at_tail = st.have_last ? last_seq - st.last_seq : last_seq + 1;
  std::printf("end reason=%s last_seq=%" PRId64 " received=%" PRIu64 " gaps=%" PRIu64 " lost_at_tail=%" PRId64
              " ignored=%" PRIu64 "\n", str_or(h, "reason", "end").c_str(), last_seq, st.received, st.gaps,
              lost_at_tail, st.ignored);
  return true;
}

void on_labels(State& st, const msgpack_object& h, const std::deque<zmq_msg_t>& f) {
  int64_t t_recv = now_wall_ns();
  if (str_or(h, "kind", "labels") != "labels") throw Malformed("kind is not labels");
  int64_t seq = as_int(need(h, "seq"), "seq"), sid = int_or(h, "sid", 0);
  same_session(st, sid, true);
  if (st.have_last && seq > st.last_seq + 1) st.gaps += uint64_t(seq - st.last_seq - 1);
  st.have_last = true;
  st.last_seq = seq;
  ++st.received;

  int64_t w = as_int(need(h, "w"), "w"), h_ = as_int(need(h, "h"), "h");
  if (w < 1 || h_ < 1 || uint64_t(w) * uint64_t(h_) > kMaxPixels) throw Malformed("bad or too large w, h");
  const size_t px = size_t(w) * size_t(h_);
  const int64_t ninst = int_or(h, "ninst", 65535);  // absent before 1.3
  const auto& parts = as_array(need(h, "parts"), "parts");
  if (f.size() != 2 + parts.size) throw Malformed("frame count differs from header.parts");

  std::vector<uint8_t> labels, instances;
  std::string label_enc, preview = "none";
  for (uint32_t i = 0; i < parts.size; ++i) {
    const msgpack_object& p = parts.ptr[i];
    std::string name = as_str(need(p, "name"), "name"), enc = as_str(need(p, "enc"), "enc");
    if (name == "labels" || name == "instances") {
      const auto& shape = as_array(need(p, "shape"), "shape");
      if (shape.size != 2 || as_int(shape.ptr[0], "shape") != h_ || as_int(shape.ptr[1], "shape") != w)
        throw Malformed(name + " shape differs from h, w");
      size_t elem = name == "labels" ? 1 : 2;
      if (as_str(need(p, "dtype"), "dtype") != (elem == 1 ? "uint8" : "uint16")) throw Malformed("bad dtype");
      (name == "labels" ? labels : instances) = decode_part(f[2 + i], enc, px * elem);
      if (name == "labels") label_enc = enc;
    } else if (name == "preview") {
      const auto& shape = as_array(need(p, "shape"), "shape");
      if (shape.size != 3) throw Malformed("preview shape is not [h, w, 3]");
      preview = std::to_string(as_int(shape.ptr[1], "shape")) + "x" + std::to_string(as_int(shape.ptr[0], "shape"));
    }  // any other part name: added by a newer minor version, ignored
  }
  if (labels.empty()) throw Malformed("no labels part");

  // pixels per instance index: value k is the mask of this message's k-th instance (little-endian uint16)
  std::vector<uint64_t> mask_pixels(size_t(ninst) + 1, 0);
  for (size_t i = 0; i < instances.size() / 2; ++i) {
    unsigned v = unsigned(instances[2 * i]) | unsigned(instances[2 * i + 1]) << 8;
    if (v > uint64_t(ninst)) throw Malformed("instance map value above ninst");
    ++mask_pixels[v];
  }
  const msgpack_object* tracks = get(h, "tracks");
  const uint32_t n_tracks = tracks ? as_array(*tracks, "tracks").size : 0;
  std::printf("labels seq=%" PRId64 " session=%" PRId64 " cam=%s fseq=%" PRId64 " size=%" PRId64 "x%" PRId64
              " enc=%s instances=%s ninst=%" PRId64 " tracks=%u preview=%s latency_ms=%.1f\n",
              seq, sid, str_or(h, "cam", "").c_str(), int_or(h, "fseq", 0), w, h_, label_enc.c_str(),
              instances.empty() ? "no" : "yes", ninst, n_tracks, preview.c_str(),
              (t_recv - int_or(h, "t_cap_wall", t_recv)) / 1e6);
  for (uint32_t j = 0; j < n_tracks; ++j) {
    const msgpack_object& t = tracks->via.array.ptr[j];
    int64_t idx = int_or(t, "idx", 0), area = int_or(t, "area", 0);
    if (idx < 0 || idx > ninst) throw Malformed("track idx outside 0..ninst");
    const auto& box = as_array(need(t, "box"), "box");
    if (box.size != 4) throw Malformed("box is not 4 numbers");
    std::string check = "coasting";
    if (idx > 0 && !instances.empty()) check = mask_pixels[size_t(idx)] == uint64_t(area) ? "ok" : "MISMATCH";
    std::printf("  track id=%" PRId64 " idx=%" PRId64 " cls=%" PRId64 " state=%" PRId64
                " box=[%.0f %.0f %.0f %.0f] area=%" PRId64 " mask_pixels=%" PRIu64 " %s\n",
                as_int(need(t, "id"), "id"), idx, as_int(need(t, "cls"), "cls"), int_or(t, "state", 1),
                as_num(box.ptr[0], "box"), as_num(box.ptr[1], "box"), as_num(box.ptr[2], "box"),
                as_num(box.ptr[3], "box"), area, idx > 0 ? mask_pixels[size_t(idx)] : 0, check.c_str());
  }
}

// ---------------------------------------------------------------- receiving
// One multipart message into `f` (frames closed by the caller; a deque never moves a zmq_msg_t once
// initialised); false on timeout.
bool recv_multipart(void* sock, std::deque<zmq_msg_t>& f) {
  int more = 1;
  while (more) {
    f.emplace_back();
    zmq_msg_init(&f.back());
    if (zmq_msg_recv(&f.back(), sock, 0) < 0) {
      if (zmq_errno() == EAGAIN && f.size() == 1) return false;
      throw std::runtime_error(std::string("zmq_msg_recv: ") + zmq_strerror(zmq_errno()));
    }
    more = zmq_msg_more(&f.back());
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s ADDRESS [TOPIC] [MAX_MESSAGES] [TIMEOUT_S]\n", argv[0]);
    return 1;
  }
  const std::string address = argv[1], topic = argc > 2 ? argv[2] : "perception";
  const long max_messages = argc > 3 ? std::atol(argv[3]) : 0;
  const int timeout_ms = (argc > 4 ? std::atoi(argv[4]) : 10) * 1000;
  const std::string classes_topic = topic + "/classes", end_topic = topic + "/end";

  void* ctx = zmq_ctx_new();
  void* sock = zmq_socket(ctx, ZMQ_SUB);
  int hwm = 1000, linger = 0;
  zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
  zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
  zmq_setsockopt(sock, ZMQ_SUBSCRIBE, topic.data(), topic.size());  // prefix: also <topic>/classes, /end
  if (zmq_connect(sock, address.c_str()) != 0) {
    std::fprintf(stderr, "cannot connect to %s: %s\n", address.c_str(), zmq_strerror(zmq_errno()));
    return 1;
  }
  State st;
  int status = -1;
  while (status < 0) {
    std::deque<zmq_msg_t> f;
    try {
      if (!recv_multipart(sock, f)) {
        std::printf("timeout: nothing for %d s\n", timeout_ms / 1000);
        status = 2;
      } else if (f.size() >= 2) {
        std::string t(static_cast<char*>(zmq_msg_data(&f[0])), zmq_msg_size(&f[0]));
        if (t == topic || t == classes_topic || t == end_topic) {  // exact match: the prefix lets others in
          Header header(zmq_msg_data(&f[1]), zmq_msg_size(&f[1]));
          const msgpack_object& h = header.root();
          if (as_int(need(h, "v"), "v") > kMajor) {
            std::printf("refused: wire major version %" PRId64 " is newer than %" PRId64 "\n",
                        as_int(need(h, "v"), "v"), kMajor);
          } else if (t == classes_topic) {
            on_classes(st, h);
          } else if (t == end_topic) {
            if (on_end(st, h)) status = 0;
          } else {
            on_labels(st, h, f);
            if (max_messages > 0 && long(st.received) >= max_messages) status = 0;
          }
        }
      }
    } catch (const Malformed& e) {
      std::printf("malformed: %s\n", e.what());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      status = 1;
    }
    for (auto& m : f) zmq_msg_close(&m);
    std::fflush(stdout);
  }
  zmq_close(sock);
  zmq_ctx_term(ctx);
  return status;
}
