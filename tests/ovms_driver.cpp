// An OVMS-faithful host for libovsaruntime.so (OVMS itself cannot be installed here).
//
// Reproduces how OpenVINO Model Server drives a custom loader (docs/RUNTIME.md, DESIGN.md §4):
// dlopen(RTLD_LAZY | RTLD_LOCAL) and never dlclose; dlsym("createCustomLoader"); one object
// per loader_name owned by a std::shared_ptr and deleted through the virtual destructor;
// loaderInit whose return value is ignored (only an exception fails it); loadModel once per
// numeric version directory, with OVMS's empty vectors that it then copies; unloadModel after a
// failed load; a watcher polling getModelBlacklistStatus every poll interval for every
// registered version (also unloaded ones), unloading on non-OK and reloading on OK; options
// change = unload + load; model removal = retireModel + unloadModel per version; shutdown =
// unloadModel for every version, loaderDeInit not called. While loads run, a second thread polls
// getModelBlacklistStatus as OVMS's watcher may (the calls overlap). Only loadModel is wrapped in
// try/catch, as in OVMS: an exception from any other method terminates this process.
//
// Commands on stdin, one per line; each command's output ends with a line "done":
//   init <loader> <config-file|->        load <loader> <model> <base_path> <options-json>
//   status <model> <version>             watch <seconds> [poll-ms]
//   options <model> <options-json>       retire <model>
//   shutdown                             quit
// Built with -DOVSA_WITH_OPENVINO (and the OpenVINO wheel's headers and libopenvino.so), also:
//   infer <model> <version> [d0,d1,..]   infer-file <path> [d0,d1,..]
// handing the loaded buffers to OpenVINO as OVMS does (IR: read_model(xml string, u8 weights
// tensor); ONNX: read_model(model string, empty tensor)), compiling for CPU with
// INFERENCE_PRECISION_HINT=f32 and printing a digest of the outputs for a fixed input.
#include <dirent.h>
#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ovms_custom_loader_interface.hpp"

#ifdef OVSA_WITH_OPENVINO
#include <cstring>

#include <openvino/openvino.hpp>
#endif

using ovms::CustomLoaderInterface;
using ovms::CustomLoaderStatus;

namespace {

typedef CustomLoaderInterface* (*CreateFn)();

struct Version {
    int number;
    enum State { LOADED, FAILED, BLACKLISTED } state;
    std::vector<uint8_t> model;    // OVMS's copies of the plugin's buffers
    std::vector<uint8_t> weights;
};

struct Model {
    std::string loader;
    std::string base;
    std::string options;
    std::vector<Version> versions;
};

void* library = nullptr;
std::map<std::string, std::shared_ptr<CustomLoaderInterface>> loaders;
std::map<std::string, Model> models;

uint64_t fnv1a(const std::vector<uint8_t>& v) {
    uint64_t h = 1469598103934665603ULL;
    for (uint8_t b : v) {
        h ^= b;
        h *= 1099511628211ULL;
    }
    return h;
}

std::vector<int> version_dirs(const std::string& base) {
    std::vector<int> out;
    DIR* d = opendir(base.c_str());
    if (d == nullptr) return out;
    while (struct dirent* e = readdir(d)) {
        std::string n = e->d_name;
        if (!n.empty() && std::all_of(n.begin(), n.end(), ::isdigit)) out.push_back(std::stoi(n));
    }
    closedir(d);
    std::sort(out.begin(), out.end());
    return out;
}

// OVMS's ModelInstance::loadOVCNNNetworkUsingCustomLoader: the only call in try/catch.
void load_version(const std::string& name, Model& m, Version& v, const char* what) {
    std::vector<uint8_t> model, weights;
    CustomLoaderStatus s = CustomLoaderStatus::INTERNAL_ERROR;
    auto& loader = loaders.at(m.loader);
    try {
        s = loader->loadModel(name, m.base, v.number, m.options, model, weights);
    } catch (const std::exception& e) {
        std::cout << "exception " << e.what() << "\n";
    } catch (...) {
        std::cout << "exception unknown\n";
    }
    bool ok = s == CustomLoaderStatus::MODEL_TYPE_IR || s == CustomLoaderStatus::MODEL_TYPE_ONNX;
    if (ok) {
        v.model = model;  // OVMS copies the vectors (into its tensors) and frees the originals
        v.weights = weights;
        v.state = Version::LOADED;
    } else {
        v.model.clear();
        v.weights.clear();
        if (v.state != Version::BLACKLISTED) v.state = Version::FAILED;
        loader->unloadModel(name, v.number);  // OVMS cleans up after a failed load
    }
    std::printf("%s %s %d %d %zu %zu %016llx %016llx\n", what, name.c_str(), v.number,
        static_cast<int>(s), v.model.size(), v.weights.size(),
        static_cast<unsigned long long>(fnv1a(v.model)),
        static_cast<unsigned long long>(fnv1a(v.weights)));
}

// A blacklist status call slower than this is reported ("slow-status..."): 50 ms, or
// OVSA_DRIVER_STATUS_LIMIT_US (the valgrind run raises it: everything is ~50x slower there).
long long status_limit_us() {
    static const long long limit = [] {
        const char* v = std::getenv("OVSA_DRIVER_STATUS_LIMIT_US");
        return v != nullptr ? std::atoll(v) : 50000LL;
    }();
    return limit;
}

void watch(double seconds, int poll_ms) {
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<long>(seconds * 1000));
    while (std::chrono::steady_clock::now() < end) {
        for (auto& entry : models) {
            auto& m = entry.second;
            auto& loader = loaders.at(m.loader);
            for (auto& v : m.versions) {
                auto t0 = std::chrono::steady_clock::now();
                CustomLoaderStatus s = loader->getModelBlacklistStatus(entry.first, v.number);
                auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
                if (us > status_limit_us()) std::printf("slow-status %s %d %lld\n", entry.first.c_str(), v.number, static_cast<long long>(us));
                if (s != CustomLoaderStatus::OK && v.state == Version::LOADED) {
                    loader->unloadModel(entry.first, v.number);
                    v.state = Version::BLACKLISTED;
                    v.model.clear();
                    v.weights.clear();
                    std::printf("blacklisted %s %d %d\n", entry.first.c_str(), v.number, static_cast<int>(s));
                } else if (s == CustomLoaderStatus::OK && v.state != Version::LOADED) {
                    load_version(entry.first, m, v, "reload");
                }
            }
        }
        std::fflush(stdout);
        std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));
    }
}

#ifdef OVSA_WITH_OPENVINO
std::vector<int64_t> parse_shape(const std::string& s) {
    std::vector<int64_t> dims;
    std::istringstream in(s);
    std::string d;
    while (std::getline(in, d, ',')) dims.push_back(std::stoll(d));
    return dims;
}

// Reshapes dynamic inputs (to `shape` if given), compiles (CPU, f32), runs one inference on the
// fixed input (f32: (k * 37 % 101) / 101) and returns the FNV-1a digest of all output bytes.
uint64_t run_openvino(std::shared_ptr<ov::Model> model, const std::string& shape) {
    static ov::Core core;
    if (!shape.empty()) {
        auto dims = parse_shape(shape);
        model->reshape(ov::PartialShape(std::vector<ov::Dimension>(dims.begin(), dims.end())));
    }
    auto compiled = core.compile_model(model, "CPU", ov::hint::inference_precision(ov::element::f32));
    auto request = compiled.create_infer_request();
    for (size_t i = 0; i < compiled.inputs().size(); i++) {
        ov::Tensor t = request.get_input_tensor(i);
        if (t.get_element_type() == ov::element::f32) {
            float* d = t.data<float>();
            for (size_t k = 0; k < t.get_size(); k++) d[k] = static_cast<float>(k * 37 % 101) / 101.0f;
        } else {
            auto* d = static_cast<uint8_t*>(t.data());
            for (size_t k = 0; k < t.get_byte_size(); k++) d[k] = static_cast<uint8_t>(k % 7);
        }
    }
    request.infer();
    std::vector<uint8_t> all;
    for (size_t i = 0; i < compiled.outputs().size(); i++) {
        ov::Tensor t = request.get_output_tensor(i);
        auto* d = static_cast<const uint8_t*>(t.data());
        all.insert(all.end(), d, d + t.get_byte_size());
    }
    return fnv1a(all);
}

// OVMS's ModelInstance: the buffers the custom loader filled become the model.
void infer_loaded(const std::string& name, int number, const std::string& shape) {
    static ov::Core core;
    for (auto& v : models.at(name).versions) {
        if (v.number != number || v.state != Version::LOADED) continue;
        try {
            std::string str(v.model.begin(), v.model.end());
            std::shared_ptr<ov::Model> model;
            if (v.weights.empty()) {
                model = core.read_model(str, ov::Tensor());  // ONNX
            } else {
                ov::Tensor weights(ov::element::u8, ov::Shape{v.weights.size()});
                std::memcpy(weights.data(), v.weights.data(), v.weights.size());
                model = core.read_model(str, weights);  // IR
            }
            std::printf("infer %s %d %016llx\n", name.c_str(), number,
                static_cast<unsigned long long>(run_openvino(model, shape)));
        } catch (const std::exception& e) {
            std::printf("infer %s %d exception %s\n", name.c_str(), number, e.what());
        }
        return;
    }
    std::printf("infer %s %d not-loaded\n", name.c_str(), number);
}
#endif

void command(const std::string& line) {
    std::istringstream in(line);
    std::string cmd;
    in >> cmd;
    if (cmd == "init") {
        std::string id, config;
        in >> id >> config;
        CreateFn create = reinterpret_cast<CreateFn>(dlsym(library, "createCustomLoader"));
        if (create == nullptr) {
            std::printf("init %s no-factory\n", id.c_str());
            return;
        }
        std::shared_ptr<CustomLoaderInterface> loader(create());
        if (!loader) {
            std::printf("init %s null\n", id.c_str());
            return;
        }
        try {
            loader->loaderInit(config == "-" ? std::string() : config);  // return value ignored
            loaders[id] = loader;
            std::printf("init %s ok\n", id.c_str());
        } catch (const std::exception& e) {
            std::printf("init %s exception %s\n", id.c_str(), e.what());
        }
    } else if (cmd == "load") {
        Model m;
        std::string name;
        in >> m.loader >> name >> m.base >> m.options;
        for (int n : version_dirs(m.base)) m.versions.push_back(Version{n, Version::FAILED, {}, {}});
        auto& stored = models[name] = m;
        // OVMS's watcher thread polls getModelBlacklistStatus for every registered version while
        // loads run on another thread: poll concurrently with the loads (through the same C++
        // objects) and report any status call slower than the limit.
        struct Polled {
            std::shared_ptr<CustomLoaderInterface> loader;
            std::string name;
            int version;
        };
        std::vector<Polled> polled;
        for (auto& e : models)
            for (auto& v : e.second.versions) polled.push_back({loaders.at(e.second.loader), e.first, v.number});
        std::atomic<bool> loads_done{false};
        std::atomic<long long> worst_us{0};
        std::thread poller([&polled, &loads_done, &worst_us] {
            while (!loads_done.load()) {
                for (auto& p : polled) {
                    auto t0 = std::chrono::steady_clock::now();
                    p.loader->getModelBlacklistStatus(p.name, p.version);
                    long long us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
                    if (us > worst_us.load()) worst_us.store(us);
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
        });
        for (auto& v : stored.versions) load_version(name, stored, v, "load");
        loads_done.store(true);
        poller.join();
        if (worst_us.load() > status_limit_us())
            std::printf("slow-status-during-load %s %lld\n", name.c_str(), worst_us.load());
    } else if (cmd == "status") {
        std::string name;
        int version = 0;
        in >> name >> version;
        auto& loader = loaders.at(models.at(name).loader);
        std::printf("status %s %d %d\n", name.c_str(), version,
            static_cast<int>(loader->getModelBlacklistStatus(name, version)));
    } else if (cmd == "watch") {
        double seconds = 1;
        int poll_ms = 1000;
        in >> seconds;
        if (!(in >> poll_ms)) poll_ms = 1000;
        watch(seconds, poll_ms);
    } else if (cmd == "options") {
        std::string name, options;
        in >> name >> options;
        auto& m = models.at(name);
        m.options = options;
        for (auto& v : m.versions) {
            std::printf("unload %s %d %d\n", name.c_str(), v.number,
                static_cast<int>(loaders.at(m.loader)->unloadModel(name, v.number)));
            load_version(name, m, v, "load");
        }
    } else if (cmd == "retire") {
        std::string name;
        in >> name;
        auto& m = models.at(name);
        auto& loader = loaders.at(m.loader);
        std::printf("retire %s %d\n", name.c_str(), static_cast<int>(loader->retireModel(name)));
        for (auto& v : m.versions)
            std::printf("unload %s %d %d\n", name.c_str(), v.number, static_cast<int>(loader->unloadModel(name, v.number)));
        models.erase(name);
    } else if (cmd == "shutdown") {
        for (auto& entry : models)
            for (auto& v : entry.second.versions)
                std::printf("unload %s %d %d\n", entry.first.c_str(), v.number,
                    static_cast<int>(loaders.at(entry.second.loader)->unloadModel(entry.first, v.number)));
        models.clear();
        auto t0 = std::chrono::steady_clock::now();
        loaders.clear();  // last shared_ptr: delete through the virtual destructor
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
        std::printf("shutdown ok %lld\n", static_cast<long long>(ms));
#ifdef OVSA_WITH_OPENVINO
    } else if (cmd == "infer") {
        std::string name, shape;
        int version = 0;
        in >> name >> version >> shape;
        infer_loaded(name, version, shape);
    } else if (cmd == "infer-file") {
        std::string path, shape;
        in >> path >> shape;
        try {
            static ov::Core core;
            std::printf("infer-file %016llx\n",
                static_cast<unsigned long long>(run_openvino(core.read_model(path), shape)));
        } catch (const std::exception& e) {
            std::printf("infer-file exception %s\n", e.what());
        }
#endif
    } else {
        std::printf("unknown-command %s\n", cmd.c_str());
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s <libovsaruntime.so>\n", argv[0]);
        return 2;
    }
    library = dlopen(argv[1], RTLD_LAZY | RTLD_LOCAL);
    if (library == nullptr) {
        std::printf("dlopen-failed %s\n", dlerror());
        return 1;
    }
    std::string line;
    while (std::getline(std::cin, line)) {
        if (line == "quit") break;
        if (!line.empty()) command(line);
        std::printf("done\n");
        std::fflush(stdout);
    }
    // Never dlclose (OVMS does not).
    return 0;
}
