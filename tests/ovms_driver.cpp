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
// unloadModel for every version, loaderDeInit not called. Only loadModel is wrapped in
// try/catch, as in OVMS: an exception from any other method terminates this process.
//
// Commands on stdin, one per line; each command's output ends with a line "done":
//   init <loader> <config-file|->        load <loader> <model> <base_path> <options-json>
//   status <model> <version>             watch <seconds> [poll-ms]
//   options <model> <options-json>       retire <model>
//   shutdown                             quit
#include <dirent.h>
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
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
                if (us > 50000) std::printf("slow-status %s %d %lld\n", entry.first.c_str(), v.number, static_cast<long long>(us));
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
        for (auto& v : stored.versions) load_version(name, stored, v, "load");
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
