//! The stand-in models through real ONNX Runtime (libonnxruntime from the
//! onnxruntime wheel, found through ORT_DYLIB_PATH as env.sh sets it).

use std::path::{Path, PathBuf};

use mobile_vla_core::config::{ModelConfig, Provider};
use mobile_vla_policy::runtime::{init_runtime, Runtime};
use mobile_vla_policy::{Policy, PolicyError};
use ort::session::RunOptions;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

fn env() -> Runtime {
    init_runtime(None).expect("libonnxruntime: source env.sh (it sets ORT_DYLIB_PATH) or run scripts/test.sh")
}

fn cpu() -> ModelConfig {
    ModelConfig { providers: vec![Provider::Cpu], ..ModelConfig::default() }
}

fn load(name: &str) -> Policy {
    Policy::load(&env(), &models().join(format!("{name}.json")), &cpu(), (4096, 4096)).unwrap()
}

fn run(p: &mut Policy, sample: &str) -> mobile_vla_policy::Action {
    let png = std::fs::read(models().join("samples").join(sample)).unwrap();
    p.preprocess_compressed("png", &png).unwrap();
    p.infer(&RunOptions::new().unwrap()).unwrap().0
}

#[test]
fn the_runtime_reports_the_library_it_loaded_and_its_version() {
    env();
    let info = init_runtime(None).unwrap().info;
    let wanted = std::fs::canonicalize(std::env::var_os("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH")).unwrap();
    assert_eq!(std::fs::canonicalize(&info.library).unwrap(), wanted, "{info}");
    // The wheel's file is libonnxruntime.so.<version>: the library says the same.
    assert!(wanted.to_string_lossy().ends_with(&info.version), "{info}");
}

#[test]
fn the_whole_chain_is_registered_and_every_node_is_counted_on_the_cpu_here() {
    let mut cfg =
        ModelConfig { providers: vec![Provider::Tensorrt, Provider::Cuda, Provider::Cpu], ..ModelConfig::default() };
    let p = Policy::load(&env(), &models().join("hybrid.json"), &cfg, (640, 480)).unwrap();
    let stage = &p.providers().stages[0];
    // The CPU wheel has neither TensorRT nor CUDA: both are skipped, with the reason.
    assert_eq!(stage.registration.registered, vec![Provider::Cpu]);
    assert_eq!(stage.registration.skipped.len(), 2, "{}", stage.registration.describe());
    let a = p.providers().assignment().expect("ONNX Runtime 1.24+ reports node assignment");
    assert_eq!(a.counts.len(), 1, "{a:?}");
    assert_eq!(a.counts[0].0, "CPUExecutionProvider");
    assert_eq!(p.providers().main(), "CPUExecutionProvider");
    // ONNX Runtime folds constants before it assigns: no more nodes than the file has.
    let file_nodes = 47;
    assert!(a.total() > 30 && a.total() <= file_nodes, "{a:?}");
    cfg.require_provider = true;
    let e = Policy::load(&env(), &models().join("hybrid.json"), &cfg, (640, 480)).err().unwrap();
    assert!(matches!(e, PolicyError::ProviderUnavailable(_)), "{e}");
    assert!(e.to_string().contains(&format!("{n}/{n} nodes on CPUExecutionProvider", n = a.total())), "{e}");
    cfg.providers = vec![Provider::Cpu];
    Policy::load(&env(), &models().join("hybrid.json"), &cfg, (640, 480)).expect("the CPU gets every node");
}

#[test]
fn hybrid_turns_toward_the_light_and_stops_on_stop() {
    let mut p = load("hybrid");
    p.set_instruction("navigate around the obstacles to the cup").unwrap();
    let left = run(&mut p, "00_light_left.png");
    assert!(left.angular_z > 0.05, "{left:?}");
    assert!(left.linear_x > 0.1, "{left:?}");
    p.set_instruction("navigate around the obstacles to the cup").unwrap();
    let right = run(&mut p, "02_light_right.png");
    assert!(right.angular_z < -0.05, "{right:?}");
    p.set_instruction("please STOP now").unwrap();
    assert_eq!(run(&mut p, "00_light_left.png"), Default::default());
}

#[test]
fn instruction_words_strafe_the_omni_base() {
    let mut p = load("hybrid");
    p.set_instruction("move left").unwrap();
    assert!((run(&mut p, "01_centred.png").linear_y - 0.25).abs() < 1e-6);
    p.set_instruction("move right").unwrap();
    assert!((run(&mut p, "01_centred.png").linear_y + 0.25).abs() < 1e-6);
}

#[test]
fn recurrent_state_carries_and_resets_on_a_new_instruction() {
    let mut p = load("hybrid");
    p.set_instruction("go forward").unwrap();
    let a1 = run(&mut p, "01_centred.png");
    let a2 = run(&mut p, "01_centred.png");
    assert!(a2.linear_x != a1.linear_x, "state should change linear.x: {a1:?} {a2:?}");
    p.set_instruction("go forward to the door").unwrap();
    let b1 = run(&mut p, "01_centred.png");
    assert!((b1.linear_x - a1.linear_x).abs() < 1e-6, "reset: {a1:?} vs {b1:?}");
}

#[test]
fn pure_runs_with_a_float16_image_and_takes_the_first_chunk_step() {
    let mut p = load("pure");
    p.set_instruction("go to the cup").unwrap();
    let a = run(&mut p, "00_light_left.png");
    assert!(a.angular_z > 0.0 && a.linear_x > 0.1, "{a:?}");
}

#[test]
fn a_model_without_an_instruction_refuses_to_run() {
    let mut p = load("hybrid");
    let png = std::fs::read(models().join("samples/01_centred.png")).unwrap();
    p.preprocess_compressed("png", &png).unwrap();
    assert!(matches!(p.infer(&RunOptions::new().unwrap()), Err(PolicyError::Tokenize(_))));
}

/// Writes a modified copy of the hybrid manifest beside the real one's files.
fn mismatched(edit: impl Fn(&mut serde_json::Value), tag: &str) -> PolicyError {
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(models().join("hybrid.json")).unwrap()).unwrap();
    edit(&mut m);
    let dir = std::env::temp_dir().join(format!("mobile_vla_contract_{tag}_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["standin_hybrid.onnx", "standin_tokenizer.json"] {
        std::fs::copy(models().join(f), dir.join(f)).unwrap();
    }
    let path = dir.join("hybrid.json");
    std::fs::write(&path, m.to_string()).unwrap();
    Policy::load(&env(), &path, &cpu(), (640, 480)).err().expect("mismatch accepted")
}

#[test]
fn manifest_graph_mismatches_name_the_tensor_and_both_sides() {
    let e = mismatched(|m| m["image"]["width"] = 256.into(), "width").to_string();
    assert!(e.contains("'pixel_values'") && e.contains("[1, 3, 224, 256]") && e.contains("[1, 3, 224, 224]"), "{e}");
    let e = mismatched(|m| m["image"]["dtype"] = "f16".into(), "dtype").to_string();
    assert!(e.contains("'pixel_values'") && e.contains("Float16") && e.contains("Float32"), "{e}");
    let e = mismatched(|m| m["text"]["max_length"] = 80.into(), "len").to_string();
    assert!(e.contains("'input_ids'") && e.contains("[1, 80]"), "{e}");
    let e = mismatched(|m| m["action"]["output"] = "actions".into(), "out").to_string();
    assert!(e.contains("'actions' is not an output of any stage"), "{e}");
    let e = mismatched(|m| m["state"] = serde_json::json!([]), "state").to_string();
    assert!(e.contains("'h_in'") && e.contains("not named in the manifest"), "{e}");
    let e = mismatched(|m| m["onnx"] = "missing.onnx".into(), "missing").to_string();
    assert!(e.contains("does not exist"), "{e}");
}

#[test]
fn a_corrupt_onnx_file_is_a_load_error() {
    let dir = std::env::temp_dir().join(format!("mobile_vla_corrupt_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let m = std::fs::read_to_string(models().join("hybrid.json")).unwrap();
    std::fs::write(dir.join("hybrid.json"), m).unwrap();
    std::fs::copy(models().join("standin_tokenizer.json"), dir.join("standin_tokenizer.json")).unwrap();
    std::fs::write(dir.join("standin_hybrid.onnx"), b"this is not a protobuf").unwrap();
    let e = Policy::load(&env(), &dir.join("hybrid.json"), &cpu(), (640, 480)).err().unwrap();
    assert!(matches!(e, PolicyError::Load(_)), "{e}");
}

/// Loads a modified copy of a models/team_tiny manifest (its graphs and tokenizer copied beside it).
fn team_mismatched(kind: &str, edit: impl Fn(&mut serde_json::Value), tag: &str) -> String {
    let team = models().join("team_tiny");
    let file = format!("{kind}.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(team.join(kind).join(&file)).unwrap()).unwrap();
    edit(&mut m);
    let root = std::env::temp_dir().join(format!("mobile_vla_team_{kind}_{tag}_{}", std::process::id()));
    for sub in [kind, "kosmos2"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
        for f in std::fs::read_dir(team.join(sub)).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, root.join(sub).join(f.file_name().unwrap())).unwrap();
        }
    }
    let path = root.join(kind).join(&file);
    std::fs::write(&path, m.to_string()).unwrap();
    let e = Policy::load(&env(), &path, &cpu(), (1280, 720)).err().expect("mismatch accepted").to_string();
    std::fs::remove_dir_all(&root).ok();
    e
}

#[test]
fn team_manifests_that_do_not_fit_their_graphs_name_the_key_and_both_shapes() {
    // A window shorter than the graph's.
    let e = team_mismatched("features", |m| m["windows"][0]["length"] = 4.into(), "len");
    assert!(
        e.contains("'vision_window'")
            && e.contains("windows[0]")
            && e.contains("[1, 4, 32]")
            && e.contains("[1, 8, 32]"),
        "{e}"
    );
    let e = team_mismatched("images", |m| m["windows"][0]["length"] = 16.into(), "ilen");
    assert!(e.contains("'image_window'") && e.contains("[1, 16, 3, 224, 224]"), "{e}");
    // A window of something that is not per-frame.
    let e = team_mismatched("features", |m| m["windows"][1]["from"] = "nothing".into(), "from");
    assert!(e.contains("'nothing'") && e.contains("neither an image input nor an output"), "{e}");
    // An axis beyond the head's two outputs.
    let e = team_mismatched("features", |m| m["action"]["axes"]["angular_z"] = json_axis(2), "axis");
    assert!(e.contains("'actions'") && e.contains("2 elements") && e.contains("need 3"), "{e}");
    // Bounds that are not an interval.
    let e = team_mismatched(
        "images",
        |m| m["action"]["axes"]["linear_x"]["bounds"] = serde_json::json!([1.0, -1.0]),
        "bounds",
    );
    assert!(e.contains("linear_x") && e.contains("bounds"), "{e}");
}

fn json_axis(index: usize) -> serde_json::Value {
    serde_json::json!({"index": index, "bounds": [-1.0, 1.0]})
}
