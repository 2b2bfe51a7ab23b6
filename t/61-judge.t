#!/usr/bin/perl
# llm-router judge and report: labels from shadow pairs (a request, the
# cheap model's answer, the strong model's) by a judge model, asked in
# both orders, and the quality loss and cost saved they show.  The judge
# is tools/mock-provider --judge, which prefers the longer answer unless
# X-Mock-Judge says otherwise; X-Mock-Fail-First and X-Mock-Status make
# it fail.  No nginx is needed: the harness only starts the mocks.

use strict;
use warnings;

use File::Temp qw(tempdir);
use List::Util qw(max min);
use POSIX ();
use Test::More;
use Time::HiRes qw(time);
use LLMRouterTest qw(json_encode json_decode slurp jsonl);

my $BIN = "$LLMRouterTest::BUILD/llm-router";
BAIL_OUT("$BIN is not built: run make") unless -x $BIN;

my $dir = tempdir('llmr-judge-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{LLMR_KEEP});
my @MOCKS;

END {
    local $?;
    kill 'TERM', @MOCKS;
    waitpid $_, 0 for @MOCKS;
}

# ------------------------------------------------------------------ helpers

# run(@args) -> { code, out, err, time }
sub run {
    my $start = time;
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', "$dir/stdout";
        open STDERR, '>', "$dir/stderr";
        exec $BIN, @_ or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    return { code => $? >> 8, out => slurp("$dir/stdout"), err => slurp("$dir/stderr"),
             time => time - $start };
}

sub write_file {
    my ($name, $content) = @_;
    my $path = "$dir/$name";
    open my $fh, '>:raw', $path or die "$path: $!\n";
    print $fh $content;
    close $fh;
    return $path;
}


# A judge: the mock in --judge mode, with a capture directory whose
# requests.log has a line for each call.  Each has its own count of
# X-Mock-Fail-First.
sub judge_mock {
    my ($name, @args) = @_;
    my $port = LLMRouterTest::free_port();
    my $capture = "$dir/capture-$name";
    mkdir $capture;
    my $log = "$dir/mock-$name.log";
    my $pid = LLMRouterTest::spawn([$^X, "$LLMRouterTest::REPO/tools/mock-provider",
                                    '--port', $port, '--name', $name, '--capture', $capture,
                                    '--exit-with-parent', '--quiet', '--judge', @args], $log);
    push @MOCKS, $pid;
    LLMRouterTest::wait_port($port, $pid) or BAIL_OUT("mock $name did not start:\n" . slurp($log));
    return { url => "http://127.0.0.1:$port/v1", capture => $capture };
}

sub calls { my @l = split /\n/, slurp("$_[0]{capture}/requests.log"); unlink "$_[0]{capture}/requests.log"; scalar @l }
sub last_body { json_decode(slurp("$_[0]{capture}/last.body")) }
sub last_head { slurp("$_[0]{capture}/last.head") }

# a shadow pair as nginx logs it
sub pair {
    my (%o) = @_;
    my %p = (id => $o{id},
             request => $o{request} // { model => 'auto',
                                         messages => [{ role => 'user', content => $o{q} // "question $o{id}" }] },
             rule => $o{rule} // 'default', model => $o{model} // 'mini',
             answer => $o{cheap}, shadow_model => 'large', shadow_answer => $o{strong},
             shadow_status => $o{status} // 200, shadow_cost_usd => 0.001, api => $o{api} // 'chat');
    for (qw(id rule answer shadow_answer shadow_status)) {
        delete $p{$_} if exists $o{"no_$_"};
    }
    return \%p;
}

# the line judge writes for a pair
sub label_line {
    my ($p, $label, $verdict) = @_;
    return sprintf '{"id":%s,"request":%s,"label":%s,"rule":%s,"model":%s,"verdict":"%s"}' . "\n",
        exists $p->{id} ? json_encode([$p->{id}]) =~ s/^\[|\]$//gr : 'null', json_encode($p->{request}),
        $label, exists $p->{rule} ? qq("$p->{rule}") : 'null', qq("$p->{model}"), $verdict;
}

my $chat = judge_mock('judge');

# strong longer, cheap longer, as long: 1, 0, 0 (a tie is as good)
my @pairs = (pair(id => 'p1', rule => 'code', cheap => 'short', strong => 'a longer answer'),
             pair(id => 'p2', cheap => 'the cheap one is longer', strong => 'brief'),
             pair(id => 7, cheap => 'same', strong => 'size', no_rule => 1),
             pair(id => 'skip-status', cheap => 'x', strong => 'yy', status => 502),
             pair(id => 'skip-missing', cheap => 'x', no_shadow_answer => 1),
             pair(id => 'skip-empty', cheap => '', strong => 'yy'),
             pair(id => 'skip-null', cheap => undef, strong => 'yy'));
my $pairs = write_file('pairs.jsonl', jsonl(@pairs));
my $expected = label_line($pairs[0], 1, 'strong') . label_line($pairs[1], 0, 'cheap')
             . label_line($pairs[2], 0, 'cheap');

# ------------------------------------------------------------------ usage

{
    my $r = run('help');
    like $r->{out}, qr/^  judge --url URL --model M /m, 'usage: judge';
    like $r->{out}, qr/^  report \[--json\] LABELS-OR-PAIRS\.jsonl \.\.\./m, 'usage: report';
    like $r->{out}, qr/95% Wilson score interval/, 'usage: says which interval';

    $r = run('judge', '--url', $chat->{url}, $pairs);
    is $r->{code}, 2, 'judge without --model: exit 2';
    like $r->{err}, qr/^llm-router: judge: --url URL, --model M and one PAIRS\.jsonl expected\nusage: /,
        'judge without --model: message and usage';
    $r = run('judge', '--url', $chat->{url}, '--model', 'j', '--api', 'anthropic', $pairs);
    is $r->{code}, 2, 'judge --api anthropic: exit 2';
    like $r->{err}, qr/judge: --api "anthropic": "chat", "messages" or "responses" expected/,
        'judge --api anthropic: message';
    $r = run('judge', '--url', $chat->{url}, '--model', 'j', '--header', 'X-Mock-Judge', $pairs);
    like $r->{err}, qr/--header "X-Mock-Judge": 'Name: value' expected/, 'judge --header: checked';
    is run('judge', '--url', $chat->{url}, '--model', 'j', '--retries', 11, $pairs)->{code}, 2,
        'judge --retries 11: exit 2';
    is run('judge', '--url', $chat->{url}, '--model', 'j', '--concurrency', 0, $pairs)->{code}, 2,
        'judge --concurrency 0: exit 2';
    $r = run('judge', '--url', $chat->{url}, '--model', 'j', "$dir/nonexistent.jsonl");
    is $r->{code}, 1, 'judge, no such file: exit 1';
    like $r->{err}, qr/nonexistent\.jsonl: No such file or directory$/, 'judge, no such file: message';
    is calls($chat), 0, 'judge: no call before the input is read';

    $r = run('report');
    is $r->{code}, 2, 'report without a file: exit 2';
    like $r->{err}, qr/^llm-router: report: one or more LABELS-OR-PAIRS\.jsonl expected\nusage: /,
        'report without a file: message';
}

# ------------------------------------------------------------------ judge

my $r = run('judge', '--url', "$chat->{url}/chat/completions", '--model', 'judge-1', $pairs);
is $r->{code}, 0, 'judge: exit 0' or diag $r->{err};
is $r->{out}, $expected, 'judge: strong longer 1, cheap longer 0, a tie 0; skipped pairs left out';
is $r->{err}, "llm-router: judge: 7 pairs: 3 labelled (1 strong, 2 cheap, 0 split), 4 skipped "
            . "(1 shadow_status not 2xx, 3 without both answers), 0 without a verdict\n",
    'judge: the summary on stderr';
is calls($chat), 6, 'judge: two calls a pair, none for the skipped';

# the judge request, in the second order (concurrency 1: the last call)
{
    my $one = write_file('one.jsonl', jsonl(pair(id => 'q', q => "What is \"2+2\"?\nExactly.",
                                                 cheap => "4", strong => "It is 4.")));
    $r = run('judge', '--url', "$chat->{url}/chat/completions", '--model', 'judge-1', '--concurrency', 1, $one);
    is $r->{out}, label_line(json_decode(slurp($one)), 1, 'strong'), 'chat judge: labelled';
    my $body = last_body($chat);
    is_deeply [sort keys %$body], [qw(max_tokens messages model temperature)], 'chat judge: the fields';
    is_deeply [@$body{qw(model max_tokens temperature)}], ['judge-1', 8, 0], 'chat judge: model, max_tokens 8, temperature 0';
    is $body->{messages}[0]{role}, 'system', 'chat judge: a system message';
    like $body->{messages}[0]{content}, qr/Reply with one word: A, B or TIE\.$/, 'chat judge: the system message';
    is_deeply $body->{messages}[1], { role => 'user', content =>
        "Question:\nWhat is \"2+2\"?\nExactly.\n\nAnswer A:\nIt is 4.\n\nAnswer B:\n4\n\n"
        . "Which answer is better? Reply with A, B, or TIE." },
        'chat judge: the question, the strong answer as A in the second order';
    unlike last_head($chat), qr/^(?:authorization|x-api-key):/mi, 'chat judge: no key, no credential';
    like last_head($chat), qr{^Content-Type: application/json\r$}m, 'chat judge: JSON';
    calls($chat);
}

# both orders the same letter: the positions disagree on the answers
for my $case (['A', 0.5, 'split'], ['B', 0.5, 'split'], ['TIE', 0, 'cheap'], ['tie', 0, 'cheap'],
              ['a.', 0.5, 'split'], ['**B**', 0.5, 'split'], [' Tie, both are fine', 0, 'cheap'])
{
    my ($v, $label, $verdict) = @$case;
    $r = run('judge', '--url', "$chat->{url}/chat/completions", '--model', 'j',
             '--header', "X-Mock-Judge: $v", $pairs);
    is $r->{out}, join('', map { label_line($_, $label, $verdict) } @pairs[0 .. 2]),
        "judge, the judge says '$v' in both orders: label $label";
}
calls($chat);

# an answer that is neither A, B nor TIE is retried at once, then the
# pair is left out
$r = run('judge', '--url', "$chat->{url}/chat/completions", '--model', 'j',
         '--header', 'X-Mock-Judge: garbage', $pairs);
is $r->{code}, 0, 'judge, garbage: exit 0';
is $r->{out}, '', 'judge, garbage: no labels';
is $r->{err}, "llm-router: judge: 7 pairs: 0 labelled (0 strong, 0 cheap, 0 split), 4 skipped "
            . "(1 shadow_status not 2xx, 3 without both answers), 3 without a verdict\n"
            . "llm-router: judge: 24 of 24 calls gave no verdict (24 answers without A, B or TIE, "
            . "0 HTTP errors, 0 network errors), the first: an answer without A, B or TIE: \"maybe\"\n",
    'judge, garbage: skipped and counted';
is calls($chat), 24, 'judge, garbage: each order asked 4 times (--retries 3 by default)';
cmp_ok $r->{time}, '<', 1.2, 'judge, garbage: retried without the pauses (1.4 s) of errors';

# the first 3 calls fail with 503: retried after 0.2 s, the run is whole
{
    my $flaky = judge_mock('flaky');
    $r = run('judge', '--url', "$flaky->{url}/chat/completions", '--model', 'j', '--concurrency', 4,
             '--header', 'X-Mock-Fail-First: 3', $pairs);
    is $r->{code}, 0, 'judge, 503 first: exit 0';
    is $r->{out}, $expected, 'judge, 503 first: the labels of a judge that did not fail';
    like $r->{err}, qr/^llm-router: judge: 3 of 9 calls gave no verdict \(0 answers without A, B or TIE, 3 HTTP errors, 0 network errors\), the first: HTTP 503$/m,
        'judge, 503 first: the failures counted';
    is calls($flaky), 9, 'judge, 503 first: 6 calls and 3 retries';
    cmp_ok $r->{time}, '>=', 0.19, 'judge, 503 first: after a pause';
}

# a judge that always fails: not fatal, every pair left out
$r = run('judge', '--url', "$chat->{url}/chat/completions", '--model', 'j', '--retries', 2,
         '--header', 'X-Mock-Status: 500', $pairs);
is $r->{code}, 0, 'judge, always 500: exit 0';
is $r->{out}, '', 'judge, always 500: no labels';
like $r->{err}, qr/, 3 without a verdict\nllm-router: judge: 18 of 18 calls gave no verdict \(0 answers without A, B or TIE, 18 HTTP errors, 0 network errors\), the first: HTTP 500\n\z/,
    'judge, always 500: a message';
is calls($chat), 18, 'judge, always 500: retried';
cmp_ok $r->{time}, '>=', 0.59, 'judge, always 500: 0.2 s, then 0.4 s';

$r = run('judge', '--url', "$chat->{url}/chat/completions", '--model', 'j', '--header', 'X-Mock-Status: 429',
         '--retries', 1, $pairs);
like $r->{err}, qr/12 of 12 calls .* 12 HTTP errors.*HTTP 429$/m, 'judge, 429: retried';
$r = run('judge', '--url', "$chat->{url}/chat/completions", '--model', 'j', '--header', 'X-Mock-Status: 400', $pairs);
like $r->{err}, qr/6 of 6 calls .* 6 HTTP errors.*HTTP 400$/m, 'judge, 400: not retried';
calls($chat);

{
    my $closed = LLMRouterTest::free_port();
    $r = run('judge', '--url', "http://127.0.0.1:$closed/v1/chat/completions", '--model', 'j',
             '--retries', 0, $pairs);
    is $r->{code}, 0, 'judge, no server: exit 0';
    like $r->{err}, qr/6 of 6 calls gave no verdict \(0 answers without A, B or TIE, 0 HTTP errors, 6 network errors\), the first: .*onnect/,
        'judge, no server: network errors';

    my $one = write_file('slow.jsonl', jsonl($pairs[0]));
    $r = run('judge', '--url', "$chat->{url}/chat/completions", '--model', 'j', '--retries', 0,
             '--timeout', 1, '--header', 'X-Mock-Delay-Ms: 3000', $one);
    is $r->{code}, 0, 'judge, --timeout: exit 0';
    like $r->{err}, qr/2 network errors\), the first: .*[Tt]imed? ?out/, 'judge, --timeout: the call timed out';
    cmp_ok $r->{time}, '<', 2.5, 'judge, --timeout: not waited for';
    calls($chat);
}

# the same labels at any concurrency, in the order of the pairs
{
    my @many;
    for my $i (1 .. 30) {
        my $n = $i % 3;
        push @many, pair(id => "m$i", rule => "r$n", cheap => 'c' x (5 + $i % 4),
                         strong => 's' x (4 + $i % 5));
    }
    my $many = write_file('many.jsonl', jsonl(@many));
    my $one = run('judge', '--url', "$chat->{url}/chat/completions", '--model', 'j', '--concurrency', 1, $many);
    my $four = run('judge', '--url', "$chat->{url}/chat/completions", '--model', 'j', '--concurrency', 4, $many);
    is $four->{out}, $one->{out}, 'judge: --concurrency 4 gives what --concurrency 1 does';
    is_deeply [sort split /\n/, $four->{out}], [sort split /\n/, $one->{out}], 'judge: the same, sorted';
    my @labels = map { json_decode($_)->{label} } split /\n/, $one->{out};
    is_deeply \@labels, [map { length $_->{shadow_answer} > length $_->{answer} ? 1 : 0 } @many],
        'judge: 30 pairs labelled by the longer answer';

    # train reads judge's lines as they are
    write_file('labels.jsonl', $one->{out});
    my $t = run('train', '--out', "$dir/judged.model", '--bits', 8, "$dir/labels.jsonl");
    is $t->{code}, 0, 'train on judge output: exit 0' or diag $t->{err};
    like $t->{out}, qr/^read 30 examples from /, 'train on judge output: every line read';
    ok -s "$dir/judged.model", 'train on judge output: a model written';
    calls($chat);
}

# text as written: escapes, a surrogate pair (two characters, not four)
{
    my $line = '{"id":"u","request":{"messages":[{"role":"user","content":"caf\u00e9?"}]},'
             . '"model":"mini","answer":"\ud83d\ude00\ud83d\ude00","shadow_answer":"a\"b","shadow_status":200}';
    my $u = write_file('unicode.jsonl', "$line\n");
    $r = run('judge', '--url', "$chat->{url}/chat/completions", '--model', 'j', '--concurrency', 1, $u);
    is $r->{out}, '{"id":"u","request":{"messages":[{"role":"user","content":"caf\u00e9?"}]},"label":1,'
                . '"rule":null,"model":"mini","verdict":"strong"}' . "\n", 'judge: escapes decoded, fields echoed';
    is last_body($chat)->{messages}[1]{content},
        "Question:\ncaf\x{e9}?\n\nAnswer A:\na\"b\n\nAnswer B:\n\x{1f600}\x{1f600}\n\n"
        . "Which answer is better? Reply with A, B, or TIE.", 'judge: the texts in the request';
    calls($chat);
}

# bad lines stop the run before any call
for my $case (['{"id":1}', qr/:2: missing "request"$/],
              ['{"request":{"model":"x"},"answer":"a","shadow_answer":"b"}', qr/:2: missing required parameter: 'messages'$/],
              ['{"request":{"messages":[]},"rule":3,"answer":"a","shadow_answer":"b"}', qr/:2: "rule" must be a string$/],
              ['{"request":{"messages":[]},"answer":{"a":1},"shadow_answer":"b"}', qr/:2: "answer" must be a string$/],
              ['{"request":{"messages":[]},"answer":"a","shadow_answer":"b","shadow_status":"ok"}',
               qr/:2: "shadow_status" must be a number from 0 to 999$/],
              ['{"request":{"messages":[]},"api":"bard","answer":"a","shadow_answer":"b"}',
               qr/:2: "api" must be "chat", "messages" or "responses"$/],
              ['{"request": 1', qr/:2: not valid JSON/])
{
    my $bad = write_file('bad.jsonl', jsonl($pairs[0]) . "$case->[0]\n");
    $r = run('judge', '--url', "$chat->{url}/chat/completions", '--model', 'j', $bad);
    is $r->{code}, 1, "judge, bad line $case->[0]: exit 1";
    like $r->{err}, $case->[1], "judge, bad line $case->[0]: message";
}
is calls($chat), 0, 'judge, bad lines: no call';

# ------------------------------------------------------------------ prompt

{
    my $prompt = write_file('prompt.txt', "Q={question}|A={a}|B={b}|again {b}|{other}");
    my $one = write_file('braces.jsonl', jsonl(pair(id => 'b', q => 'why {a}?', cheap => 'says {b}',
                                                    strong => 'x')));
    $r = run('judge', '--url', "$chat->{url}/chat/completions", '--model', 'j', '--concurrency', 1,
             '--prompt', $prompt, '--header', 'X-Mock-Judge: B', $one);
    is $r->{code}, 0, 'judge --prompt: exit 0' or diag $r->{err};
    is last_body($chat)->{messages}[1]{content}, 'Q=why {a}?|A=x|B=says {b}|again says {b}|{other}',
        'judge --prompt: placeholders filled once';
    is json_decode($r->{out})->{label}, 0.5, 'judge --prompt: labelled';

    $r = run('judge', '--url', "$chat->{url}/chat/completions", '--model', 'j',
             '--prompt', write_file('noa.txt', "{question} {b}"), $one);
    is $r->{code}, 1, 'judge --prompt without {a}: exit 1';
    like $r->{err}, qr/noa\.txt: the prompt has no \{a\} or no \{b\}$/, 'judge --prompt without {a}: message';
    calls($chat);
}

# ------------------------------------------------------------------ APIs

# the judge in each API, with a key; the pairs in each API too
{
    my $keyed = judge_mock('keyed', '--key', 'sk-judge');
    my $key = write_file('key', "  sk-judge\n\n");
    my $msg_req = { model => 'auto', max_tokens => 64, system => 'be brief',
                    messages => [{ role => 'user', content => [{ type => 'text', text => 'first' }] },
                                 { role => 'assistant', content => 'ok' },
                                 { role => 'user', content => [{ type => 'text', text => 'the messages question' }] }] };
    my $resp_req = { model => 'auto', instructions => 'be brief', input => 'the responses question' };
    my @api_pairs = (@pairs[0 .. 2],
                     pair(id => 'msg', api => 'messages', request => $msg_req, cheap => 'no', strong => 'yes!'),
                     pair(id => 'resp', api => 'responses', request => $resp_req, cheap => 'long enough', strong => 'no'));
    my $api_file = write_file('api-pairs.jsonl', jsonl(@api_pairs));
    my $api_expected = $expected . label_line($api_pairs[3], 1, 'strong') . label_line($api_pairs[4], 0, 'cheap');

    my %path = (chat => 'chat/completions', messages => 'messages', responses => 'responses');
    for my $api (qw(chat messages responses)) {
        $r = run('judge', '--url', "$keyed->{url}/$path{$api}", '--model', "judge-$api", '--api', $api,
                 '--key-file', $key, '--concurrency', 1, $api_file);
        is $r->{code}, 0, "$api judge: exit 0" or diag $r->{err};
        is $r->{out}, $api_expected, "$api judge: the labels, pairs of every API";
        is calls($keyed), 10, "$api judge: no retry";

        my $body = last_body($keyed);
        my $head = last_head($keyed);
        my $user = "Question:\nthe responses question\n\nAnswer A:\nno\n\nAnswer B:\nlong enough\n\n"
                 . "Which answer is better? Reply with A, B, or TIE.";
        if ($api eq 'chat') {
            is $body->{messages}[1]{content}, $user, 'chat judge: a Responses question';
            like $head, qr/^Authorization: Bearer sk-judge\r$/m, 'chat judge: the key trimmed, a bearer token';
        } elsif ($api eq 'messages') {
            is_deeply [sort keys %$body], [qw(max_tokens messages model system temperature)],
                'messages judge: the fields';
            is_deeply [@$body{qw(model max_tokens)}, $body->{messages}], ['judge-messages', 8,
                [{ role => 'user', content => $user }]], 'messages judge: the request';
            like $body->{system}, qr/Reply with one word: A, B or TIE\.$/, 'messages judge: the system prompt';
            like $head, qr/^x-api-key: sk-judge\r$/m, 'messages judge: x-api-key';
            like $head, qr/^anthropic-version: 2023-06-01\r$/m, 'messages judge: anthropic-version';
            unlike $head, qr/^Authorization:/mi, 'messages judge: no bearer token';
        } else {
            is_deeply [sort keys %$body], [qw(input instructions max_output_tokens model)],
                'responses judge: the fields';
            is_deeply [@$body{qw(model max_output_tokens input)}], ['judge-responses', 16, $user],
                'responses judge: the request';
            like $head, qr/^Authorization: Bearer sk-judge\r$/m, 'responses judge: a bearer token';
        }
    }

    my $one = write_file('msg.jsonl', jsonl($api_pairs[3]));
    run('judge', '--url', "$keyed->{url}/messages", '--model', 'j', '--api', 'messages', '--key-file', $key,
        '--concurrency', 1, $one);
    like last_body($keyed)->{messages}[0]{content}, qr/^Question:\nthe messages question\n\nAnswer A:\nyes!\n/,
        'judge: the question of a Messages pair is its last user message';
    calls($keyed);

    $r = run('judge', '--url', "$keyed->{url}/chat/completions", '--model', 'j', $api_file);
    is $r->{code}, 0, 'judge without the key: exit 0';
    like $r->{err}, qr/10 of 10 calls .* 10 HTTP errors.*HTTP 401$/m, 'judge without the key: 401, not retried';
    calls($keyed);

    $r = run('judge', '--url', "$keyed->{url}/chat/completions", '--model', 'j',
             '--key-file', write_file('two-keys', "sk-judge\nsk-other\n"), $api_file);
    is $r->{code}, 1, 'judge, a key of two lines: exit 1';
    like $r->{err}, qr/two-keys: the key is more than one line$/, 'judge, a key of two lines: message';
    unlike $r->{err}, qr/sk-/, 'judge, a key of two lines: the key not shown';
    $r = run('judge', '--url', "$keyed->{url}/chat/completions", '--model', 'j',
             '--key-file', write_file('no-key', " \n"), $api_file);
    like $r->{err}, qr/no-key: no key$/, 'judge, an empty key file: message';
    is calls($keyed), 0, 'judge, bad key files: no call';
}

# ------------------------------------------------------------------ report

# labels of judge and pairs of nginx, known figures
my @labels = ((map { +{ id => "c$_->[0]", label => $_->[1], rule => 'code', model => 'mini' } }
                   [1, 1], [2, 1], [3, 0.5], [4, 0]),
              (map { +{ id => "d$_", label => 0, rule => 'default', model => 'mini' } } 1 .. 3),
              { id => 'n1', label => 0, rule => 'default', model => 'nano' },
              { id => 'n2', label => 1, rule => 'default', model => 'nano' },
              { id => 'n3', label => 0, model => 'nano' });
my $labels = write_file('report-labels.jsonl', jsonl(@labels));
my $costs = write_file('report-pairs.jsonl', jsonl(
    { id => 'c1', cost_usd => 0.0001, shadow_cost_usd => 0.001, shadow_status => 200, escalated => JSON::PP::false },
    { id => 'c2', cost_usd => 0.0002, shadow_cost_usd => 0.002, shadow_status => 200, escalated => JSON::PP::false },
    { id => 'c3', cost_usd => 0.0005, shadow_cost_usd => 0.0005, shadow_status => 200, escalated => JSON::PP::true },
    { id => 'c4', cost_usd => 0.0002, shadow_cost_usd => 0.002, shadow_status => 500, escalated => JSON::PP::false },
    { id => 'c5', shadow_cost_usd => 0.002 }));

# The Wilson score interval, by hand for rule "default": 5 requests, 1
# strong answer better, p = 0.2, z = 1.96:
#   centre = (p + z^2/2n) / (1 + z^2/n) = 0.58416 / 1.76832 = 0.330348
#   half   = z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n)
#          = 1.96 sqrt(0.032 + 0.038416) / 1.76832 = 0.294125
#   [0.036223, 0.624472]
sub wilson {
    my ($sum, $n) = @_;
    my ($z, $p) = (1.96, $sum / $n);
    my $d = 1 + $z**2 / $n;
    my $c = ($p + $z**2 / (2 * $n)) / $d;
    my $h = $z * sqrt($p * (1 - $p) / $n + $z**2 / (4 * $n**2)) / $d;
    return (max(0, $c - $h), min(1, $c + $h));
}
is join(' ', map { sprintf '%.6f', $_ } wilson(1, 5)), '0.036223 0.624472', 'report: the interval by hand';

$r = run('report', $labels, $costs);
is $r->{code}, 0, 'report: exit 0' or diag $r->{err};
is $r->{err}, '', 'report: no message';
is $r->{out}, <<'EOF', 'report: the table';
quality loss: the share of requests whose strong answer was better,
with its 95% Wilson score interval (low, high)

               n    loss     low    high
all           10   35.0%   13.7%   64.6%
rule default   5   20.0%    3.6%   62.4%
rule code      4   62.5%   21.9%   90.8%
rule (none)    1    0.0%    0.0%   79.3%
model mini     7   35.7%   11.8%   69.7%
model nano     3   33.3%    6.1%   79.2%
cost of 3 requests: 0.00080000 USD, 0.00350000 USD all strong
saved: 0.00270000 USD (77.1%)
escalated: 1 of 4 requests (25.0%)
EOF

$r = run('report', '--json', $labels, $costs);
is $r->{code}, 0, 'report --json: exit 0';
my $j = eval { json_decode($r->{out}) };
ok $j, 'report --json: valid JSON' or diag $r->{out};
like $r->{out}, qr/\A\{[^\n]*\}\n\z/, 'report --json: one object, on one line';
is_deeply [@$j{qw(lines interval confidence)}], [15, 'wilson', 0.95], 'report --json: what it is';
is_deeply $j->{all}, { n => 10, loss => 0.35, low => 0.136928, high => 0.646334 }, 'report --json: all';
is_deeply $j->{rules}[0], { rule => 'default', n => 5, loss => 0.2, low => 0.036223, high => 0.624472 },
    'report --json: a rule';
is_deeply [map { [$_->{rule}, $_->{n}] } @{ $j->{rules} }], [['default', 5], ['code', 4], [undef, 1]],
    'report --json: the rules, the largest first, none last';
is_deeply [map { [$_->{model}, $_->{n}, sprintf('%.6f', $_->{loss})] } @{ $j->{models} }],
    [['mini', 7, '0.357143'], ['nano', 3, '0.333333']], 'report --json: the models';
for my $g (@{ $j->{rules} }, @{ $j->{models} }) {
    my ($lo, $hi) = wilson($g->{loss} * $g->{n}, $g->{n});
    is sprintf('%.6f %.6f', $g->{low}, $g->{high}), sprintf('%.6f %.6f', $lo, $hi),
        'report --json: the interval of ' . ($g->{rule} // $g->{model} // 'none');
}
is_deeply $j->{cost}, { requests => 3, cost_usd => 0.0008, strong_usd => 0.0035, saved_usd => 0.0027,
                        saved_share => 0.771429 }, 'report --json: cost saved';
is_deeply $j->{escalation}, { requests => 4, escalated => 1, rate => 0.25 }, 'report --json: escalation';

$r = run('report', $costs);
is $r->{err}, '', 'report: pairs alone, no message';
is $r->{out}, "quality loss: no labelled requests\ncost of 3 requests: 0.00080000 USD, 0.00350000 USD all strong\n"
            . "saved: 0.00270000 USD (77.1%)\nescalated: 1 of 4 requests (25.0%)\n", 'report: pairs alone';
$r = run('report', '--json', $labels);
$j = json_decode($r->{out});
ok !defined $j->{cost} && !defined $j->{escalation}, 'report --json: labels alone, no cost';
$r = run('report', '--json', $costs);
$j = json_decode($r->{out});
is_deeply $j->{all}, { n => 0, loss => undef, low => undef, high => undef }, 'report --json: no labels';

# judge's own output, and the pairs it came from
{
    my $judged = run('judge', '--url', "$chat->{url}/chat/completions", '--model', 'j', $pairs);
    my $out = write_file('judged.jsonl', $judged->{out});
    $r = run('report', $out, $pairs);
    like $r->{out}, qr/^all           3   33\.3%    6\.1%   79\.2%$/m, 'report on judge output: all';
    like $r->{out}, qr/^rule \(none\)   1    0\.0%    0\.0%   79\.3%$/m, 'report on judge output: a rule';
    calls($chat);
}

for my $case (['{"label": 2}', qr/:1: "label" must be a number from 0 to 1$/],
              ['{"label": 1, "model": ["x"]}', qr/:1: "model" must be a string$/],
              ['{"cost_usd": -1, "shadow_cost_usd": 1}', qr/:1: "cost_usd" must be a number from 0 to/],
              ['{"escalated": "yes"}', qr/:1: "escalated" must be true, false, 0 or 1$/],
              ['[1]', qr/:1: not a JSON object$/])
{
    $r = run('report', write_file('bad-report.jsonl', "$case->[0]\n"));
    is $r->{code}, 1, "report, bad line $case->[0]: exit 1";
    like $r->{err}, $case->[1], "report, bad line $case->[0]: message";
}
$r = run('report', write_file('empty.jsonl', ''));
is $r->{code}, 1, 'report, no data: exit 1';
like $r->{err}, qr/report: no data$/, 'report, no data: message';

done_testing;
