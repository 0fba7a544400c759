"""Model card and publishing. Uploads go to a local stand-in for the Hub's HTTP API (a thread on 127.0.0.1 serving
the endpoints `create_repo` and `create_commit` call), so the real `huggingface_hub` client runs end to end and
nothing touches the network."""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from transformers import TrainerState

from llada import LLaDAModelLM
from llada.hub import LLADA_TAGS, build_model_card, push_to_hub, training_details, write_model_card
from llada.modeling_llada import HUB_CORE_FILES

from .conftest import FIXTURE_DIR, tiny_config


class HubStandIn:
    """A minimal Hub: `POST /api/repos/create`, `/api/validate-yaml`, `/api/models/{repo}/preupload/{rev}` (every
    file `regular`, so contents travel base64 in the commit) and `/api/models/{repo}/commit/{rev}` (NDJSON).
    Anything else answers 404 and is recorded in `unexpected`."""

    def __init__(self, namespace: str = "stand-in-user"):
        self.namespace = namespace
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: list[dict] = []
        self.requests: list[tuple[str, str]] = []
        self.unexpected: list[tuple[str, str]] = []
        self.authorization: set[str | None] = set()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?")[0]
                stand_in.requests.append(("POST", path))
                stand_in.authorization.add(self.headers.get("Authorization"))
                status, answer = stand_in.answer(path, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                stand_in.requests.append(("GET", self.path))
                stand_in.unexpected.append(("GET", self.path))
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    def answer(self, path: str, body: bytes) -> tuple[int, dict]:
        if path == "/api/repos/create":
            request = json.loads(body)
            repo_id = f"{request.get('organization') or self.namespace}/{request['name']}"
            if repo_id in self.repos:
                return 409, {"error": "You already created this model repo", "url": f"{self.endpoint}/{repo_id}"}
            self.repos[repo_id] = {}
            return 200, {"url": f"{self.endpoint}/{repo_id}"}
        if path == "/api/validate-yaml":
            content = json.loads(body)["content"]
            try:
                yaml.safe_load(content.split("---")[1])
            except Exception as error:  # the real Hub answers 400 with a list of errors
                return 400, {"errors": [{"message": str(error)}]}
            return 200, {}
        parts = path.split("/")  # ['', 'api', 'models', ns, name, action, revision]
        if len(parts) == 7 and parts[:3] == ["", "api", "models"]:
            repo_id, action = f"{parts[3]}/{parts[4]}", parts[5]
            if repo_id not in self.repos:
                return 404, {"error": f"Repository {repo_id} not found"}
            if action == "preupload":
                files = json.loads(body)["files"]
                return 200, {
                    "files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                }
            if action == "commit":
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                header, files = lines[0], {}
                for line in lines[1:]:
                    assert line["key"] == "file" and line["value"]["encoding"] == "base64", line
                    files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
                self.repos[repo_id].update(files)
                self.commits.append({"repo_id": repo_id, "summary": header["value"]["summary"], "files": files})
                oid = f"{len(self.commits):040x}"
                return 200, {"commitUrl": f"{self.endpoint}/{repo_id}/commit/{oid}", "commitOid": oid}
        self.unexpected.append(("POST", path))
        return 404, {"error": "not found"}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub(monkeypatch):
    # conftest sets HF_HUB_OFFLINE=1 for the suite; requests to the stand-in on 127.0.0.1 are allowed here.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    with HubStandIn() as stand_in:
        yield stand_in


def tiny_model():
    torch.manual_seed(0)
    return LLaDAModelLM(tiny_config()).eval()


def tiny_tokenizer():
    from llada.training.tokenizer import train_tokenizer

    return train_tokenizer(["In the beginning God created the heaven and the earth."] * 4, vocab_size=300)


def parse_card(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


EXPECTED_MODEL_FILES = {"config.json", "generation_config.json", "model.safetensors", "README.md", *HUB_CORE_FILES}


def test_push_model_uploads_one_commit_with_every_file(hub, tmp_path):
    model, tokenizer = tiny_model(), tiny_tokenizer()
    info = push_to_hub(
        model,
        "me/tiny-llada",
        tokenizer=tokenizer,
        endpoint=hub.endpoint,
        token="hf_stand_in_token",
        datasets=["me/kjv"],
        base_model="GSAI-ML/LLaDA-8B-Base",
        training_data="The King James Bible.",
        tags=["demo"],
    )
    assert hub.unexpected == []
    assert len(hub.commits) == 1 and hub.commits[0]["summary"] == "Upload LLaDA model"
    files = hub.repos["me/tiny-llada"]
    tokenizer_files = {"tokenizer.json", "tokenizer_config.json"}
    assert EXPECTED_MODEL_FILES | tokenizer_files <= set(files)
    assert set(files) - EXPECTED_MODEL_FILES - tokenizer_files <= {"special_tokens_map.json", "chat_template.jinja"}
    assert info.oid == f"{1:040x}" and hub.authorization == {"Bearer hf_stand_in_token"}

    # What arrived is a loadable checkpoint: the same weights, the auto_map, the hub-core code.
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    assert json.loads(files["config.json"])["auto_map"]["AutoModel"] == "modeling_llada.LLaDAModelLM"
    for name in HUB_CORE_FILES:
        assert files[name] == (Path(__file__).parents[1] / "src" / "llada" / name).read_bytes()
    loaded = LLaDAModelLM.from_pretrained(tmp_path)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)

    metadata = parse_card(files["README.md"].decode())
    assert metadata == {
        "base_model": "GSAI-ML/LLaDA-8B-Base",
        "datasets": ["me/kjv"],
        "language": "en",
        "library_name": "transformers",
        "license": "apache-2.0",
        "pipeline_tag": "text-generation",
        "tags": [*LLADA_TAGS, "demo"],
    }
    readme = files["README.md"].decode()
    assert 'AutoModel.from_pretrained("me/tiny-llada", trust_remote_code=True' in readme
    assert 'LLaDAModelLM.from_pretrained("me/tiny-llada"' in readme
    assert "| data | The King James Bible. |" in readme
    assert "has a chat template" in readme


def test_push_resolves_namespace_and_reuses_existing_repo(hub):
    model = tiny_model()
    model.config._name_or_path = "GSAI-ML/LLaDA-8B-Base"  # as after from_pretrained("GSAI-ML/LLaDA-8B-Base")
    push_to_hub(model, "tiny", endpoint=hub.endpoint, token="t")
    push_to_hub(model, "tiny", endpoint=hub.endpoint, token="t", commit_message="Second")
    assert [c["repo_id"] for c in hub.commits] == ["stand-in-user/tiny"] * 2
    assert hub.commits[1]["summary"] == "Second"
    readme = hub.repos["stand-in-user/tiny"]["README.md"].decode()
    assert 'from_pretrained("stand-in-user/tiny"' in readme  # the card names the resolved repository
    assert parse_card(readme)["base_model"] == "GSAI-ML/LLaDA-8B-Base"


def test_push_folder_adds_code_files_and_skips_training_state(hub, tmp_path):
    # A folder in the published format (no code files, no auto_map) plus trainer leftovers.
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((FIXTURE_DIR / name).read_bytes())
    (folder / "optimizer.pt").write_bytes(b"state")
    (folder / "trainer_state.json").write_text(
        json.dumps(
            {"global_step": 40, "epoch": 2.0, "log_history": [{"loss": 3.5, "step": 20}, {"loss": 2.25, "step": 40}]}
        )
    )
    before = (folder / "config.json").read_bytes()
    push_to_hub(folder, "me/from-folder", endpoint=hub.endpoint, token="t")
    files = hub.repos["me/from-folder"]
    assert set(files) == {"config.json", "model.safetensors", "trainer_state.json", "README.md", *HUB_CORE_FILES}
    assert "auto_map" in json.loads(files["config.json"]) and (folder / "config.json").read_bytes() == before
    readme = files["README.md"].decode()
    assert "Trained for 40 optimizer steps." in readme and "| final training loss | 2.2500 (step 40) |" in readme


def test_failed_save_sends_nothing(hub):
    class Broken:
        def save_pretrained(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        push_to_hub(Broken(), "me/broken", endpoint=hub.endpoint, token="t")
    assert hub.requests == []


def test_invalid_card_is_refused_before_upload(hub):
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):
        push_to_hub(
            tiny_model(), "me/bad-card", card="---\nkey: [unclosed\n---\nbody", endpoint=hub.endpoint, token="t"
        )
    assert hub.commits == []


def test_offline_push_fails_before_any_upload(tmp_path, monkeypatch):
    from huggingface_hub.errors import OfflineModeIsEnabled

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(OfflineModeIsEnabled):
        push_to_hub(tiny_model(), "me/offline", endpoint="http://127.0.0.1:9", token="t")


def test_card_from_trainer_state_and_args():
    from transformers import TrainingArguments

    state = TrainerState(global_step=120, epoch=3.0, train_batch_size=8, num_input_tokens_seen=30720)
    state.log_history = [{"loss": 4.0, "step": 60}, {"loss": 3.125, "step": 120}, {"train_loss": 3.5, "step": 120}]

    class FakeTrainer:  # what Trainer exposes after train(): state, args, train_dataset
        def __init__(self):
            self.state = state
            self.args = TrainingArguments(output_dir="unused", learning_rate=3e-4, per_device_train_batch_size=8)
            self.train_dataset = list(range(320))

    details = training_details(trainer=FakeTrainer(), training_data="KJV verses")
    facts = dict(details["facts"])
    assert details["summary"] == "Trained with `FakeTrainer` for 120 optimizer steps."
    assert facts == {
        "data": "KJV verses",
        "training samples": "320",
        "optimizer steps": "120",
        "epochs": "3.00",
        "tokens seen": "30,720",
        "batch size per device": "8",
        "final training loss": "3.1250 (step 120)",
        "mean training loss": "3.5000",
    }
    hyper = dict(details["hyperparameters"])
    assert hyper["learning_rate"] == "0.0003" and hyper["per_device_train_batch_size"] == "8"
    assert hyper["lr_scheduler_type"] == "linear"


def test_card_from_model_reads_generation_config_and_name(tmp_path):
    model = tiny_model()
    model.generation_config.max_new_tokens, model.generation_config.steps = 48, 24
    model.config._name_or_path = "GSAI-ML/LLaDA-8B-Instruct"
    card = build_model_card(model, repo_id="me/x", license="mit", language=None)
    assert isinstance(card, ModelCard)
    assert card.data.base_model == "GSAI-ML/LLaDA-8B-Instruct" and card.data.license == "mit"
    text = str(card)
    assert "| `max_new_tokens` | `48` |" in text and "| `steps` | `24` |" in text
    assert "max_new_tokens=48, steps=24, block_length=32" in text
    assert "parameters | 22.2K (22,176)" in text
    assert "## Training" not in text
    # write_model_card on a saved folder: the same card, except that save_pretrained does not keep `_name_or_path`.
    model.save_pretrained(tmp_path)
    path = write_model_card(
        tmp_path, repo_id="me/x", license="mit", language=None, base_model="GSAI-ML/LLaDA-8B-Instruct"
    )
    assert path.read_text() == text


def test_card_refuses_other_architectures(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type is 'llama'"):
        build_model_card(tmp_path)
    with pytest.raises(ValueError, match="has no config.json"):
        build_model_card(tmp_path / "missing")


def test_card_of_a_real_llada_trainer_run(tmp_path):
    from llada.training import LLaDAPretrainingCollator, LLaDATrainer, LLaDATrainingArguments

    tokenizer = tiny_tokenizer()
    config = tiny_config(
        vocab_size=len(tokenizer),
        embedding_size=len(tokenizer),
        mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LLaDAModelLM(config)
    args = LLaDATrainingArguments(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=2,
        max_steps=2,
        logging_steps=1,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    rows = [{"input_ids": [i % 50 + 1] * 16} for i in range(4)]
    trainer = LLaDATrainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=LLaDAPretrainingCollator(tokenizer, max_length=16, packed=True),
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "out"))
    readme = write_model_card(tmp_path / "out", repo_id="me/run", trainer=trainer, training_data="Four rows.")
    text = readme.read_text()
    last_loss = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry][-1]
    assert "Trained with `LLaDATrainer` for 2 optimizer steps." in text
    assert f"| final training loss | {last_loss:.4f} (step 2) |" in text
    assert "| training samples | 4 |" in text and "| data | Four rows. |" in text
    assert "| `mask_eps` | `0.001` |" in text and "| `learning_rate` | `0.001` |" in text  # LLaDA fields too
    # Trainer.push_to_hub writes its card through create_model_card: ours, with this run's details.
    trainer.save_model()
    trainer.create_model_card(model_name="me/run", dataset_tags="me/rows")
    card = (tmp_path / "run" / "README.md").read_text()
    metadata = parse_card(card)
    assert metadata["library_name"] == "transformers" and "masked-diffusion" in metadata["tags"]
    assert metadata["datasets"] == ["me/rows"]
    assert "Trained with `LLaDATrainer` for 2 optimizer steps." in card


def test_model_push_to_hub_publishes_the_same_files(hub):
    model, tokenizer = tiny_model(), tiny_tokenizer()
    model.push_to_hub("me/method", tokenizer=tokenizer, endpoint=hub.endpoint, token="t", tags=["x"])
    push_to_hub(model, "me/function", tokenizer=tokenizer, endpoint=hub.endpoint, token="t", tags=["x"])
    method, function = hub.repos["me/method"], hub.repos["me/function"]
    assert set(method) == set(function) and len(hub.commits) == 2
    assert parse_card(method["README.md"].decode())["tags"] == [*LLADA_TAGS, "x"]
