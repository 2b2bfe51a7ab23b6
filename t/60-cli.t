#!/usr/bin/perl
# llm-router, the offline companion: train, score, calibrate and eval on
# small synthetic data (requests about proofs need the strong model,
# greetings do not), in each API, replay against nginx, and bad input
# everywhere.

use strict;
use warnings;

use File::Temp qw(tempdir);
use POSIX ();
use Test::More;
use LLMRouterTest qw(json_encode json_decode slurp jsonl);

my $BIN = "$LLMRouterTest::BUILD/llm-router";
BAIL_OUT("$BIN is not built: run make") unless -x $BIN;

my $dir = tempdir('llmr-cli-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{LLMR_KEEP});

# ------------------------------------------------------------------ helpers

# run(@args, { stdin => bytes }) -> { code, out, err }
sub run {
    my $opt = ref $_[-1] eq 'HASH' ? pop : {};
    my $in = "$dir/stdin";
    write_file($in, $opt->{stdin} // '');
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        open STDIN, '<', $in;
        open STDOUT, '>', "$dir/stdout";
        open STDERR, '>', "$dir/stderr";
        exec $BIN, @_ or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    return { code => $? >> 8, out => slurp("$dir/stdout"), err => slurp("$dir/stderr") };
}

sub write_file {
    my ($path, $content) = @_;
    open my $fh, '>:raw', $path or die "$path: $!\n";
    print $fh $content;
    close $fh;
    return $path;
}


# Deterministic requests: the filler words are shared by both classes, so
# only "prove"/"theorem" against "hello"/"thanks" tells them apart.
my @filler = qw(river stone maple ember orbit violet copper lantern harbor meadow);
my @hard = ('Please prove the theorem about the %s and the %s.',
            'Can you prove that this theorem on %s %s holds?',
            'Write a rigorous proof: theorem of the %s, given the %s.');
my @easy = ('hello, a note about the %s and the %s',
            'thanks for the %s and %s!',
            'hello again, thanks, %s %s');

sub request {
    my ($hard, $i) = @_;
    my $t = ($hard ? \@hard : \@easy)->[int($i / 10) % 3];
    my $text = sprintf $t, $filler[$i % @filler], $filler[($i * 3 + 1) % @filler];
    return { model => 'auto', messages => [{ role => 'user', content => $text }] };
}

# $n rows from $first, every $every-th one needs the strong model; the weak
# model is wrong exactly there
sub rows {
    my ($first, $n, $every, %o) = @_;
    my @rows;
    for my $i ($first .. $first + $n - 1) {
        my $hard = $i % $every == 0 ? 1 : 0;
        my %row = (id => $o{id} ? "$o{id}$i" : $i, request => request($hard, $i),
                   weak_correct => $hard ? JSON::PP::false : JSON::PP::true,
                   strong_correct => JSON::PP::true);
        $row{label} = $hard if $o{label};
        push @rows, \%row;
    }
    return @rows;
}

# The same request in another API.  A Messages request has its text in a
# tool_result block, which a chat request's reading skips, after a turn
# that is the same everywhere; a Responses request has its input as a
# string or as items.
my $system = 'You answer briefly.';

sub in_api {
    my ($api, $req, $i) = @_;
    my $text = $req->{messages}[0]{content};
    return $req if $api eq 'chat';
    return { model => 'auto', instructions => $system,
             input => $i % 2 ? $text
                              : [{ role => 'user', content => [{ type => 'input_text', text => $text }] }] }
        if $api eq 'responses';
    return { model => 'auto', max_tokens => 512,
             system => $i % 2 ? $system : [{ type => 'text', text => $system }],
             messages => [
                 { role => 'user', content => [{ type => 'text', text => 'Look it up.' }] },
                 { role => 'assistant', content => [{ type => 'tool_use', id => 'toolu_1', name => 'notes',
                                                      input => { q => 'today' } }] },
                 { role => 'user', content => [{ type => 'tool_result', tool_use_id => 'toolu_1',
                                                 content => $i % 2 ? $text
                                                                   : [{ type => 'text', text => $text }] }] },
             ] };
}

# rows in one API, or in each in turn (three rows each): with "api"
sub in_apis {
    my ($api, @rows) = @_;
    my $k = 0;
    return map {
        my $in = $api // (qw(chat messages responses))[int($k / 3) % 3];
        +{ %$_, api => $in, request => in_api($in, $_->{request}, $k++) }
    } @rows;
}

sub without_api { map { my %row = %$_; delete $row{api}; \%row } @_ }

my $train = write_file("$dir/train.jsonl", jsonl(rows(0, 300, 3, label => 1, id => 't')));
my @test = rows(1000, 100, 10);
my $test = write_file("$dir/test.jsonl", jsonl(@test));
my $cv = write_file("$dir/cv.jsonl", jsonl(rows(2000, 200, 5)));

sub model_size { 24 + (4 << $_[0]) + 4 }

sub training_loss { ($_[0]{out} =~ /^trained on all \d+: training loss ([\d.]+)$/m)[0] }

# a model file as the core writes it, with all weights zero: every score ties
sub zero_model {
    my $bits = 8;
    my $data = "LLMRCLF\0" . pack('VVVf<', 1, $bits, 0, 0) . ("\0" x (4 << $bits));
    my $h = 2166136261;
    $h = (($h ^ $_) * 16777619) & 0xffffffff for unpack 'C*', $data;
    return write_file("$dir/zero.bin", $data . pack('V', $h));
}

# ------------------------------------------------------------------ usage

for my $args ([], ['help'], ['--help'], ['train', '--help']) {
    my $r = run(@$args);
    is $r->{code}, 0, "usage: '@$args' exits 0";
    like $r->{out}, qr/^usage: llm-router COMMAND.*\n  replay --url URL/s, "usage: '@$args' prints usage";
    like $r->{out}, qr/^Every command takes --api chat\|messages\|responses,/m, "usage: '@$args' has --api";
}

{
    my $r = run('frobnicate');
    is $r->{code}, 2, 'unknown command: exit 2';
    like $r->{err}, qr/^llm-router: unknown command "frobnicate"\nusage: /,
        'unknown command: message and usage';
    is $r->{out}, '', 'unknown command: nothing on stdout';
}

# ------------------------------------------------------------------ train

my $model = "$dir/model.bin";
my $r = run('train', '--out', $model, '--bits', 12, $train);
is $r->{code}, 0, 'train: exit 0' or diag $r->{err};
like $r->{out}, qr/^read 300 examples from \Q$train\E$/m, 'train: examples read';
like $r->{out}, qr/^held out \d+ \(--holdout 0\.2\): trained on \d+, .*, held-out log loss [\d.]+$/m,
    'train: held-out log loss';
like $r->{out}, qr/^held out, \d+ with outcomes: APGR [\d.]+, CPT\(50%\) [\d.]+%, CPT\(80%\) [\d.]+%$/m,
    'train: held-out routing figures';
like $r->{out}, qr/^wrote \Q$model\E: 12 bits, 16412 bytes$/m, 'train: model written';
is -s $model, model_size(12), 'train: file size is llmr_classifier_size(bits)';
ok !-e "$model.tmp", 'train: no temporary file left';
my ($held_apgr) = $r->{out} =~ /APGR ([\d.]+)/;
cmp_ok $held_apgr, '>', 0.8, 'train: held-out APGR near the best (0.83)';

{
    my $again = run('train', '--out', "$dir/again.bin", '--bits', 12, $train);
    ok slurp("$dir/again.bin") eq slurp($model), 'train: the same data and options, the same bytes';

    my $one = run('train', '--out', "$dir/one.bin", '--bits', 12, '--epochs', 1, $train);
    my $ten = run('train', '--out', "$dir/ten.bin", '--bits', 12, '--epochs=10', $train);
    cmp_ok training_loss($ten), '<', training_loss($one), 'train: loss decreases with epochs'
        or diag "$one->{out}\n$ten->{out}";

    my $seeded = run('train', '--out', "$dir/seed.bin", '--bits', 12, '--seed', 7, $train);
    ok slurp("$dir/seed.bin") ne slurp($model), 'train: another seed, another model';

    my $all = run('train', '--out', "$dir/all.bin", '--bits', 12, '--holdout', 0, $train);
    is $all->{code}, 0, 'train --holdout 0: exit 0';
    unlike $all->{out}, qr/^held out/m, 'train --holdout 0: no held-out report';

    my $one_row = write_file("$dir/one.jsonl", jsonl(rows(0, 1, 3, label => 1)));
    my $few = run('train', '--out', "$dir/few.bin", '--bits', 8, $one_row);
    is $few->{code}, 0, 'train: a single example';
    like $few->{out}, qr/^held out: none, 1 examples are too few/m, 'train: too few to hold out';

    my $soft = write_file("$dir/w.jsonl", jsonl({ request => request(1, 0), label => 0.75, weight => 2.5 },
                                                { request => request(0, 1), label => 0 }));
    my $weighted = run('train', '--out', "$dir/w.bin", '--bits', 8, $soft);
    is $weighted->{code}, 0, 'train: soft labels and weights';
}

# ------------------------------------------------------------------ score

sub scores {
    my ($out) = @_;
    return map { my $s = json_decode($_); ($s->{id} => $s->{score}) } split /\n/, $out;
}

$r = run('score', '--model', $model, $test);
is $r->{code}, 0, 'score: exit 0' or diag $r->{err};
my @lines = split /\n/, $r->{out};
is scalar @lines, 100, 'score: a line per request';
like $lines[0], qr/^\{"id": 1000, "score": 0\.\d{6}\}$/, 'score: the line format';
my %score = scores($r->{out});
my @hard_scores = map { $score{ $_->{id} } } grep { !$_->{weak_correct} } @test;
my @easy_scores = map { $score{ $_->{id} } } grep { $_->{weak_correct} } @test;
my ($min_hard) = sort { $a <=> $b } @hard_scores;
my ($max_easy) = sort { $b <=> $a } @easy_scores;
cmp_ok $min_hard, '>', $max_easy, 'score: every proof scores above every greeting';
cmp_ok $min_hard, '>', 0.5, 'score: proofs score above 0.5';
cmp_ok $max_easy, '<', 0.5, 'score: greetings score below 0.5';

{
    my $ids = jsonl('{"id": "a\"b", "request": ' . json_encode(request(1, 0)) . '}',
                    '{"request": ' . json_encode(request(0, 0)) . ', "id" : {"k": [1, 2.50]} }',
                    '',
                    '{"request": ' . json_encode(request(0, 1)) . '}');
    my $s = run('score', '--model', $model, '-', { stdin => $ids });
    is $s->{code}, 0, 'score from stdin: exit 0' or diag $s->{err};
    my @ids = map { /^\{"id": (.*), "score": [\d.]+\}$/ ? $1 : $_ } split /\n/, $s->{out};
    is_deeply \@ids, ['"a\"b"', '{"k": [1, 2.50]}', 4],
        'score: ids echoed byte for byte; without one, the line number';

    my $same = run('score', '--model', $model, { stdin => slurp($test) });
    is $same->{out}, $r->{out}, 'score: stdin by default';
}

# ------------------------------------------------------------------ calibrate

$r = run('calibrate', '--model', $model, '--strong-share', 0.3, $test);
is $r->{code}, 0, 'calibrate: exit 0' or diag $r->{err};
my ($threshold, $pct) =
    $r->{out} =~ /^threshold (0\.\d{6}) \(([\d.]+)% of 100 requests score above it\)$/m;
ok defined $threshold, 'calibrate: threshold line' or diag $r->{out};
like $r->{out}, qr/^llm_router_rule learned score>\Q$threshold\E large;$/m, 'calibrate: rule line';
my $above = grep { $_ > $threshold } values %score;
is sprintf('%.1f', 100 * $above / keys %score), $pct,
    'calibrate: the share printed is the share above the threshold';
cmp_ok abs($pct - 30), '<=', 5, 'calibrate: near the share asked for';

for ([0, 0], [1, 100]) {
    my ($share, $want) = @$_;
    my $c = run('calibrate', '--model', $model, '--strong-share', $share, $test);
    like $c->{out}, qr/\(\Q$want\E\.0% of 100 requests/, "calibrate: share $share sends $want%";
}

# ------------------------------------------------------------------ eval

$r = run('eval', '--model', $model, $test);
is $r->{code}, 0, 'eval: exit 0' or diag $r->{err};
like $r->{out}, qr/^rows\s+100\nweak accuracy\s+0\.9000\nstrong accuracy\s+1\.0000\n/,
    'eval: rows and accuracies';
my @curve = $r->{out} =~ /^\s+(\d+)%\s+([\d.]+)\s+([\d.]+)$/mg;
is scalar @curve, 33, 'eval: 11 points of the curve';
like $r->{out}, qr/^\s+10%\s+1\.0000\s+1\.0000$/m, 'eval: all the gap recovered at 10%';
my ($apgr) = $r->{out} =~ /^APGR\s+([\d.]+)$/m;
cmp_ok $apgr, '>=', 0.94, 'eval: APGR near the best (0.95) on separable data';
like $r->{out}, qr/^CPT\(50%\)\s+5\.00%\nCPT\(80%\)\s+8\.00%$/m, 'eval: CPT(50%) and CPT(80%)';

{
    my $j = run('eval', '--model', $model, '--json', $test);
    my $e = eval { json_decode($j->{out}) };
    ok $e, 'eval --json: one JSON object' or diag $j->{out};
    is $e->{rows}, 100, 'eval --json: rows';
    is scalar @{ $e->{curve} }, 11, 'eval --json: the curve';
    is_deeply [map { $_->{pgr} } @{ $e->{curve} }[0, 10]], [0, 1], 'eval --json: PGR from 0 to 1';
    is sprintf('%.4f', $e->{apgr}), $apgr, 'eval --json: the APGR of the text';
    is $e->{cpt50}, 0.05, 'eval --json: CPT(50%) as a share';

    # the hard rows come first in the file: ties must not profit from it
    my $sorted = write_file("$dir/sorted.jsonl",
        jsonl(sort { $a->{weak_correct} <=> $b->{weak_correct} } @test));
    my $z = run('eval', '--model', zero_model(), $sorted);
    like $z->{out}, qr/^APGR\s+0\.5000\nCPT\(50%\)\s+50\.00%\nCPT\(80%\)\s+80\.00%$/m,
        'eval: all scores tied, the expected curve is random routing';

    my $same = run('eval', '--model', $model, write_file("$dir/same.jsonl",
        jsonl(map { { %$_, weak_correct => 1, strong_correct => 1 } } @test)));
    like $same->{out}, qr/^APGR n\/a$/m, 'eval: no gap between the models, no APGR';

    my $cvr = run('eval', '--cv', 5, '--bits', 12, $cv);
    is $cvr->{code}, 0, 'eval --cv: exit 0' or diag $cvr->{err};
    like $cvr->{out}, qr/^rows\s+200$/m, 'eval --cv: every row scored';
    my ($cv_apgr) = $cvr->{out} =~ /^APGR\s+([\d.]+)$/m;
    cmp_ok $cv_apgr, '>', 0.85, 'eval --cv: APGR near the best (0.90) out of fold';
    is run('eval', '--cv', 5, '--bits', 12, $cv)->{out}, $cvr->{out}, 'eval --cv: deterministic';

    my $both = run('eval', '--cv', 5, '--model', $model, $cv);
    is $both->{code}, 2, 'eval: --cv and --model together are a usage error';
    like run('eval', '--cv', 5000, $cv)->{err}, qr/--cv "5000": an integer from 2 to 1000 expected/,
        'eval: --cv out of range';
}

# ------------------------------------------------------------------ APIs

# a model of requests in the three APIs, each line with its "api"
my $api_model = "$dir/api.bin";
my @api_test = in_apis(undef, @test);
my $api_test = write_file("$dir/api-test.jsonl", jsonl(@api_test));
my %api_score;
my ($api_threshold, $api_above);

{
    my $mixed = write_file("$dir/api-train.jsonl",
                           jsonl(in_apis(undef, rows(0, 300, 3, label => 1, id => 't'))));
    my $r = run('train', '--out', $api_model, '--bits', 12, $mixed);
    is $r->{code}, 0, 'APIs, train: exit 0' or diag $r->{err};
    like $r->{out}, qr/^read 300 examples from /m, 'APIs, train: every line read';
    my ($held) = $r->{out} =~ /APGR ([\d.]+)/;
    cmp_ok $held, '>', 0.8, 'APIs, train: held-out APGR near the best';

    my %file;
    for my $api (qw(messages responses)) {
        $file{$api} = write_file("$dir/api-$api.jsonl", jsonl(in_apis($api, @test)));
        $file{"bare $api"} = write_file("$dir/api-bare-$api.jsonl",
                                        jsonl(without_api(in_apis($api, @test))));

        my $s = run('score', '--model', $api_model, $file{$api});
        is $s->{code}, 0, "APIs, score $api: exit 0" or diag $s->{err};
        my %score = scores($s->{out});
        is scalar keys %score, 100, "APIs, score $api: a line per request";
        my ($min_hard) = sort { $a <=> $b } map { $score{ $_->{id} } } grep { !$_->{weak_correct} } @test;
        my ($max_easy) = sort { $b <=> $a } map { $score{ $_->{id} } } grep { $_->{weak_correct} } @test;
        cmp_ok $min_hard, '>', $max_easy, "APIs, score $api: every proof scores above every greeting";

        my $default = run('score', '--model', $api_model, '--api', $api, $file{"bare $api"});
        is $default->{out}, $s->{out}, "APIs, score $api: --api for lines without \"api\"";
        my $own = run('score', '--model', $api_model, "--api=$api", $file{$api});
        is $own->{out}, $s->{out}, "APIs, score $api: --api and the lines' own";
        my $other = run('score', '--model', $api_model, '--api', 'chat', $file{$api});
        is $other->{out}, $s->{out}, "APIs, score $api: a line's \"api\" wins over --api";
    }

    # read as chat, as they were before the APIs: the text of a tool_result
    # is not read, every Messages request looks the same
    my $chat = run('score', '--model', $api_model, $file{'bare messages'});
    is $chat->{code}, 0, 'APIs, Messages read as chat: exit 0';
    my %chat = reverse scores($chat->{out});
    is scalar keys %chat, 1, 'APIs, Messages read as chat: a single score';

    $chat = run('score', '--model', $api_model, $file{'bare responses'});
    is $chat->{code}, 1, 'APIs, Responses read as chat: exit 1';
    like $chat->{err}, qr/:1: missing required parameter: 'messages'$/,
        'APIs, Responses read as chat: chat by default';

    $r = run('score', '--model', $api_model, $api_test);
    %api_score = scores($r->{out});

    $r = run('calibrate', '--model', $api_model, '--strong-share', 0.3, $api_test);
    is $r->{code}, 0, 'APIs, calibrate: exit 0' or diag $r->{err};
    ($api_threshold) = $r->{out} =~ /^threshold (0\.\d{6}) \(/m;
    ok defined $api_threshold, 'APIs, calibrate: threshold' or diag $r->{out};
    $api_above = grep { $_ > $api_threshold } values %api_score;

    $r = run('eval', '--model', $api_model, $api_test);
    is $r->{code}, 0, 'APIs, eval: exit 0' or diag $r->{err};
    my ($apgr) = $r->{out} =~ /^APGR\s+([\d.]+)$/m;
    cmp_ok $apgr, '>=', 0.94, 'APIs, eval: APGR near the best (0.95)';

    $r = run('eval', '--cv', 5, '--bits', 12, write_file("$dir/api-cv.jsonl",
                                                         jsonl(in_apis(undef, rows(2000, 200, 5)))));
    is $r->{code}, 0, 'APIs, eval --cv: exit 0' or diag $r->{err};
    ($apgr) = $r->{out} =~ /^APGR\s+([\d.]+)$/m;
    cmp_ok $apgr, '>', 0.85, 'APIs, eval --cv: APGR near the best (0.90) out of fold';

    # every command takes --api, and knows its values
    for my $cmd (qw(train score calibrate eval replay cascade)) {
        my $b = run($cmd, '--api', 'anthropic', $api_test);
        is $b->{code}, 2, "$cmd --api anthropic: exit 2";
        like $b->{err},
            qr/^llm-router: $cmd: --api "anthropic": "chat", "messages" or "responses" expected\nusage: /,
            "$cmd --api anthropic: message and usage";
    }
    like run('score', '--model', $api_model, $api_test, '--api')->{err},
        qr/^llm-router: score: --api needs a value/, 'score --api without a value';
    like run('score', '--model', $api_model, '--api', 'Chat', $api_test)->{err},
        qr/--api "Chat": "chat"/, 'score --api Chat: names are lower case';
}

# ------------------------------------------------------------------ bad input

my $req = json_encode(request(1, 0));
my $outcomes = '"label": 1, "weak_correct": true, "strong_correct": true';
my %bad = (
    json      => ['{"request": ' . $req . ', "label": 1',
                  qr/:3: not valid JSON \(at byte \d+\): parse error: premature EOF/],
    array     => ['[1, 2]', qr/:3: not a JSON object$/],
    scalar    => ['42', qr/:3: not a JSON object$/],
    request   => ['{"id": 1, ' . $outcomes . '}',
                  qr/:3: missing "request"$/],
    string    => ['{"request": "hi", "label": 1, "weak_correct": 1, "strong_correct": 1}',
                  qr/:3: "request" is not an object$/],
    messages  => ['{"request": {"model": "auto"}, ' . $outcomes . '}',
                  qr/:3: missing required parameter: 'messages'$/],
    empty     => ['{"request": {"messages": []}, ' . $outcomes . '}',
                  qr/:3: 'messages' must be a non-empty array$/],
    api       => ['{"api": "anthropic", "request": ' . $req . ', ' . $outcomes . '}',
                  qr/:3: "api" must be "chat", "messages" or "responses"$/],
    api_type  => ['{"api": ["chat"], "request": ' . $req . ', ' . $outcomes . '}',
                  qr/:3: "api" must be "chat", "messages" or "responses"$/],
    dialect   => ['{"api": "responses", "request": ' . $req . ', ' . $outcomes . '}',
                  qr/:3: missing required parameter: 'input'$/],
);

my %need = (
    train     => [[qw(train --bits 8 --out), "$dir/bad.bin"],
                  label => ['{"request": ' . $req . '}', qr/:3: missing "label"$/],
                  range => ['{"request": ' . $req . ', "label": 2}',
                            qr/:3: "label" must be a number from 0 to 1$/],
                  weight => ['{"request": ' . $req . ', "label": 1, "weight": -1}',
                             qr/:3: "weight" must be a number from 0 to/]],
    score     => [['score', '--model', $model]],
    calibrate => [['calibrate', '--model', $model, '--strong-share', 0.5]],
    eval      => [['eval', '--model', $model],
                  outcome => ['{"request": ' . $req . ', "weak_correct": true}',
                              qr/:3: missing "strong_correct"$/],
                  boolean => ['{"request": ' . $req . ', "weak_correct": "yes", "strong_correct": true}',
                              qr/:3: "weak_correct" must be true, false, 0 or 1$/]],
    'eval --cv' => [['eval', '--cv', 2, '--bits', 8]],
);

my $good = json_encode({ id => 1, request => request(1, 0), label => 1,
                         weak_correct => 0, strong_correct => 1 });

for my $cmd (sort keys %need) {
    my ($args, %own) = @{ $need{$cmd} };
    my %cases = (%bad, %own);
    for my $case (sort keys %cases) {
        my ($line, $want) = @{ $cases{$case} };
        # line 2 is empty: lines are counted as they are in the file
        my $file = write_file("$dir/bad-$case.jsonl", "$good\n\n$line\n$good\n");
        my $b = run(@$args, $file);
        is $b->{code}, 1, "$cmd, $case: exit 1";
        like $b->{err}, qr/^llm-router: \Q$file\E$want/, "$cmd, $case: message with the line";
    }

    my $missing = run(@$args, "$dir/nonexistent.jsonl");
    is $missing->{code}, 1, "$cmd, missing file: exit 1";
    like $missing->{err}, qr/^llm-router: \Q$dir\E\/nonexistent\.jsonl: No such file or directory$/,
        "$cmd, missing file: message";

    my $nothing = run(@$args, write_file("$dir/blank.jsonl", "\n  \n"));
    like $nothing->{err}, qr/blank\.jsonl: no data$/, "$cmd, no data: message" unless $cmd eq 'score';

    my $unknown = run(@$args, '--frobnicate', 3, $test);
    is $unknown->{code}, 2, "$cmd, unknown option: exit 2";
    like $unknown->{err}, qr/^llm-router: \w+: unknown option "--frobnicate"\nusage: /,
        "$cmd, unknown option: message and usage";
}

{
    my $b = run('train', '--out', "$dir/x.bin", '--bits', 99, $train);
    is $b->{code}, 2, 'train --bits 99: exit 2';
    like $b->{err}, qr/^llm-router: train: --bits "99": an integer from 8 to 24 expected\n/,
        'train --bits 99: message';
    like run('train', '--out', "$dir/x.bin", '--rate', 'fast', $train)->{err},
        qr/--rate "fast": a number from/,
        'train --rate fast: message';
    like run('train', $train)->{err},
        qr/^llm-router: train: --out FILE and one DATA\.jsonl expected\nusage: /,
        'train without --out: message';
    like run('train', '--out')->{err}, qr/^llm-router: train: --out needs a value/,
        'train --out without a value';
    like run('train', $train, '--out', "$dir/x.bin", '--bits', 7)->{err}, qr/^llm-router: train: --bits "7"/,
        'train: options after the data file';
    is run('score', $test, '--model', $model)->{code}, 0, 'score: options after the data file';
    like run('eval', '--json=1', '--cv', 2, $cv)->{err}, qr/--json takes no value/, 'eval --json=1: message';
    is run('score', $test)->{code}, 2, 'score without --model: exit 2';
    is run('calibrate', '--model', $model, $test)->{code}, 2, 'calibrate without --strong-share: exit 2';
    is run('calibrate', '--model', $model, '--strong-share', 1.5, $test)->{code}, 2,
        'calibrate --strong-share 1.5: exit 2';

    my $unwritable = run('train', '--out', "$dir/no/such/dir/m.bin", '--bits', 8, $train);
    is $unwritable->{code}, 1, 'train to a missing directory: exit 1';
    like $unwritable->{err}, qr{^llm-router: \Q$dir\E/no/such/dir/m\.bin\.tmp: No such file or directory$}m,
        'train to a missing directory: message';
}

# model files
{
    my $bytes = slurp($model);
    my $corrupt = $bytes;
    substr($corrupt, 100, 1) = chr(ord(substr $corrupt, 100, 1) ^ 1);
    my %models = (
        missing   => ["$dir/nonexistent.bin", qr/No such file or directory/],
        corrupt   => [write_file("$dir/corrupt.bin", $corrupt), qr/corrupt classifier file: bad checksum/],
        truncated => [write_file("$dir/truncated.bin", substr $bytes, 0, 1000),
                      qr/truncated classifier file: 1000 bytes, 16412 expected/],
        foreign   => [$train, qr/not a classifier file/],
        empty     => [write_file("$dir/empty.bin", ''), qr/not a classifier file/],
    );
    for my $case (sort keys %models) {
        my ($file, $want) = @{ $models{$case} };
        for my $args (['score'], ['calibrate', '--strong-share', 0.5], ['eval']) {
            my $b = run(@$args, '--model', $file, $test);
            is $b->{code}, 1, "$args->[0], $case model: exit 1";
            like $b->{err}, qr/^llm-router: \Q$file\E: $want$/, "$args->[0], $case model: message";
        }
    }
}

# ------------------------------------------------------------------ replay

# The decisions of nginx itself: the model written above as its
# classifier, the threshold from calibrate as its rule; nothing is
# forwarded.  /fixed answers a decision record, its model from a header;
# /v1/ reads each request in the API of its path (llm_router_api auto,
# the default); /echo/ answers a record whose model is the URI.
my $nowhere = 'http://127.0.0.1:1/v1/chat/completions';
my $fixed = '{"model":"$http_x_model","upstream_model":"gpt-4o","rule":"complex",'
          . '"url":"http://x","stream":false,"messages":1,"est_tokens":6,'
          . '"prompt_tokens":9,"score":null,"est_cost_usd":0.0000225}';
my $echo = '{"model":"$uri$is_args$args"}';
my $t = LLMRouterTest->new;
$t->config(<<"EOF")->run;
llm_router_model mini  { url $nowhere; model gpt-4o-mini; auth none; price 0.15 0.60; }
llm_router_model large { url $nowhere; model gpt-4o;      auth none; price 2.50 10.00; }
llm_router_model mini-m  { api messages; url $nowhere; auth none; price 0.15 0.60; }
llm_router_model large-m { api messages; url $nowhere; auth none; price 2.50 10.00; }
llm_router_model mini-r  { api responses; url $nowhere; auth none; price 0.15 0.60; }
llm_router_model large-r { api responses; url $nowhere; auth none; price 2.50 10.00; }
server {
    listen 127.0.0.1:%%PORT%%;
    default_type application/json;

    location = /explain {
        llm_router_classifier $model;
        llm_router_rule learned score>$threshold large;
        llm_router_default mini;
        llm_router_explain;
    }
    location /v1/ {
        llm_router_classifier $api_model;
        llm_router_rule learned score>$api_threshold large;
        llm_router_default mini;
        llm_router_explain;
    }
    location /v1/messages {
        llm_router_classifier $api_model;
        llm_router_rule learned score>$api_threshold large-m;
        llm_router_default mini-m;
        llm_router_explain;
    }
    location /v1/responses {
        llm_router_classifier $api_model;
        llm_router_rule learned score>$api_threshold large-r;
        llm_router_default mini-r;
        llm_router_explain;
    }
    location = /fixed {
        return 200 '$fixed';
    }
    location /echo/ {
        return 200 '$echo';
    }
    location = /plain {
        return 200 '{"id":"chatcmpl-1","choices":[]}';
    }
    location = /teapot {
        return 418;
    }
}
EOF

my $url = 'http://127.0.0.1:' . $t->port;

$r = run('replay', '--url', "$url/explain", $test);
is $r->{code}, 0, 'replay: exit 0' or diag $r->{err};
like $r->{out}, qr/^requests 100, failed 0\nHTTP 200: 100\ndecisions 100, forwarded 0$/m,
    'replay: counts';
my $mini = 100 - $above;
like $r->{out}, qr/^model large: $above \(\Q$pct\E%\)$/m,
    'replay: the large share is the share calibrate printed';
like $r->{out}, qr/^model mini: $mini \(/m, 'replay: the rest to mini';
like $r->{out}, qr/^rule learned: $above$/m, 'replay: rule counts';
like $r->{out}, qr/^rule default: $mini$/m, 'replay: default counts';
like $r->{out}, qr/^est_cost_usd total 0\.\d{8}, mean 0\.\d{8}$/m, 'replay: cost';
my ($mean) = $r->{out} =~ /^score mean ([\d.]+) \(100 decisions with a score\)$/m;
my $sum = 0;
$sum += $_ for values %score;
is $mean, sprintf('%.4f', $sum / 100), 'replay: the mean score of nginx is that of llm-router score';

{
    # plain chat bodies, a header, a limit, one at a time
    my $log = write_file("$dir/log.jsonl", jsonl(map { request($_ % 2, $_) } 1 .. 20));
    my $f = run('replay', '--url', "$url/fixed", '--header', 'X-Model: large', '--concurrency', 1,
                '--limit', 7, $log);
    is $f->{code}, 0, 'replay fixed: exit 0' or diag $f->{err};
    is $f->{out}, "requests 7, failed 0\nHTTP 200: 7\ndecisions 7, forwarded 0\n"
                . "model large: 7 (100.0%)\nrule complex: 7\n"
                . "est_cost_usd total 0.00015750, mean 0.00002250\n",
        'replay fixed: the header sent, the records tallied, no score';

    my $p = run('replay', '--url', "$url/plain", $log);
    is $p->{out}, "requests 20, failed 0\nHTTP 200: 20\ndecisions 0, forwarded 20\n",
        'replay: other answers are forwarded';

    my $tea = run('replay', '--url', "$url/teapot", '--concurrency', 3, $log);
    like $tea->{out}, qr/^HTTP 418: 20\ndecisions 0, forwarded 0$/m, 'replay: statuses';

    my $dead = run('replay', '--url', 'http://127.0.0.1:1/', $log);
    is $dead->{code}, 1, 'replay, no server: exit 1';
    like $dead->{out}, qr/^requests 20, failed 20$/m, 'replay, no server: counted';
    like $dead->{err}, qr{^llm-router: http://127\.0\.0\.1:1/: 20 of 20 requests failed, the first: .*connect}im,
        'replay, no server: message';

    my $bad = write_file("$dir/bad-log.jsonl", jsonl(request(1, 0)) . "{\"model\": \"auto\"}\n");
    my $b = run('replay', '--url', "$url/plain", $bad);
    is $b->{code}, 1, 'replay, bad line: exit 1';
    like $b->{err}, qr/^llm-router: \Q$bad\E:2: missing required parameter: 'messages'$/,
        'replay, bad line: message';
    is $b->{out}, '', 'replay, bad line: nothing sent';

    $b = run('replay', '--url', "$url/plain", write_file("$dir/bad-json.jsonl", "{\"request\": [1]}\n"));
    like $b->{err}, qr/:1: "request" is not an object$/, 'replay, bad request member: message';
    $b = run('replay', '--url', "$url/plain", "$dir/nonexistent.jsonl");
    like $b->{err}, qr/nonexistent\.jsonl: No such file or directory$/, 'replay, missing file: message';
    $b = run('replay', '--url', "$url/plain", write_file("$dir/bad-api.jsonl",
             jsonl({ api => 'messages', request => { input => 'hi' } })));
    like $b->{err}, qr/:1: missing required parameter: 'messages'$/, 'replay, a body not of its API: message';
    $b = run('replay', '--url', "$url/plain", write_file("$dir/unknown-api.jsonl",
             jsonl({ api => 'gemini', request => request(1, 0) })));
    like $b->{err}, qr/:1: "api" must be "chat", "messages" or "responses"$/, 'replay, unknown API: message';
    $b = run('replay', '--url', "$url/plain", '--header', 'X-Model', $log);
    is $b->{code}, 2, 'replay, bad header: exit 2';
    like $b->{err}, qr/--header "X-Model": 'Name: value' expected/, 'replay, bad header: message';
    is run('replay', $log)->{code}, 2, 'replay without --url: exit 2';
    is run('replay', '--url', $url, '--concurrency', 0, $log)->{code}, 2,
        'replay --concurrency 0: exit 2';
}

# requests in the three APIs: each to the path of its own where the URL
# ends as an API's does, else all to the URL
{
    my @mixed = in_apis(undef, rows(0, 9, 3));
    my $log = write_file("$dir/api-log.jsonl", jsonl(@mixed));

    my $r = run('replay', '--url', "$url/echo/v1/chat/completions?k=v", $log);
    is $r->{code}, 0, 'replay APIs: exit 0' or diag $r->{err};
    like $r->{out}, qr{^model /echo/v1/chat/completions\?k=v: 3 \(33\.3%\)\n}m,
        'replay APIs: chat to its path';
    like $r->{out}, qr{^model /echo/v1/messages\?k=v: 3 \(33\.3%\)\n}m, 'replay APIs: Messages to its path';
    like $r->{out}, qr{^model /echo/v1/responses\?k=v: 3 \(33\.3%\)\n}m, 'replay APIs: Responses to its path';

    $r = run('replay', '--url', "$url/echo/v1/responses", $log);
    like $r->{out}, qr{^model /echo/v1/messages: 3 }m, 'replay APIs: from a Responses URL too';

    $r = run('replay', '--url', "$url/echo/any", $log);
    like $r->{out}, qr{^decisions 9, forwarded 0\nmodel /echo/any: 9 \(100\.0%\)$}m,
        'replay APIs: another URL takes every request';

    # bare bodies, in the API of --api
    my $bare = write_file("$dir/api-bare.jsonl",
                          jsonl(map { $_->{request} } in_apis('responses', rows(0, 4, 3))));
    $r = run('replay', '--url', "$url/echo/v1/chat/completions", '--api', 'responses', $bare);
    like $r->{out}, qr{^model /echo/v1/responses: 4 \(100\.0%\)$}m, 'replay APIs: bare bodies in --api';
    $r = run('replay', '--url', "$url/echo/v1/chat/completions", $bare);
    like $r->{err}, qr/:1: missing required parameter: 'messages'$/,
        'replay APIs: bare bodies in chat by default';

    # nginx reads each in its API, and scores it as llm-router does
    my %n;
    $n{ $_->{api} }++ for @api_test;
    $r = run('replay', '--url', "$url/v1/chat/completions", $api_test);
    is $r->{code}, 0, 'replay APIs to nginx: exit 0' or diag $r->{err};
    like $r->{out}, qr/^requests 100, failed 0\nHTTP 200: 100\ndecisions 100, forwarded 0$/m,
        'replay APIs to nginx: counts';
    for my $api (sort keys %n) {
        like $r->{out}, qr/^api $api: $n{$api} \(/m, "replay APIs to nginx: $api read as $api";
    }
    my $large = 0;
    $large += $_ for $r->{out} =~ /^model large(?:-m|-r)?: (\d+) \(/mg;
    is $large, $api_above,
        'replay APIs to nginx: the large share is the share calibrate printed';
    my ($mean) = $r->{out} =~ /^score mean ([\d.]+) \(100 decisions with a score\)$/m;
    my $sum = 0;
    $sum += $_ for values %api_score;
    is $mean, sprintf('%.4f', $sum / 100), 'replay APIs to nginx: the mean score is that of llm-router score';
}

$t->stop;

# ---------------------------------------------------------------- cascade

{
    sub answered {
        my ($content, $weak, $strong, %extra) = @_;
        return { request => { messages => [{ role => 'user', content => 'sum it up' }] },
                 weak_correct => $weak ? JSON::PP::true : JSON::PP::false,
                 strong_correct => $strong ? JSON::PP::true : JSON::PP::false,
                 answer => { choices => [{ index => 0, finish_reason => $extra{finish} // 'stop',
                                           message => { role => 'assistant', content => $content } }] } };
    }

    my $data = write_file("$dir/cascade.jsonl", jsonl(
        answered("so it is 4.\n#### 4", 1, 1),
        answered("it could be 5, I am not sure", 0, 1),
        answered("the total is", 0, 1),
        answered("#### 7", 1, 1, finish => 'length'),
        answered("#### 9", 0, 0),
    ));

    my $r = run('cascade', '--json', '--require', '####[[:space:]]*-?[0-9]',
                '--pattern', 'NOT SURE', $data);
    is $r->{code}, 0, 'cascade: exit 0' or diag $r->{err};
    my $c = eval { json_decode($r->{out}) } // {};
    is_deeply [@$c{qw(rows strong_share quality pgr)}], [5, 0.6, 0.8, 1],
              'cascade: three answers escalated (hedging, no final number, length), '
              . 'the gap recovered';

    $r = run('cascade', '--json', $data);
    $c = eval { json_decode($r->{out}) } // {};
    is_deeply [@$c{qw(strong_share quality)}], [0.2, 0.4],
              'cascade: by default only finish_reason and empty answers escalate';

    my $bad = write_file("$dir/cascade-bad.jsonl", jsonl(
        answered("#### 1", 1, 1),
        { request => { messages => [{ role => 'user', content => 'x' }] },
          weak_correct => JSON::PP::true, strong_correct => JSON::PP::true },
    ));
    $r = run('cascade', $bad);
    is_deeply [$r->{code}, $r->{err}], [1, "llm-router: $bad:2: missing \"answer\"\n"],
              'cascade: a line without an answer is named';

    # answers in the API of their request: a message, a response
    sub answered_in {
        my ($api, $content, $weak, $strong, $end) = @_;
        my $row = answered($content, $weak, $strong);
        my $part = { type => $api eq 'messages' ? 'text' : 'output_text', text => $content };
        $row->{api} = $api;
        $row->{request} = in_api($api, $row->{request}, 0);
        $row->{answer} = $api eq 'messages'
            ? { id => 'msg_1', type => 'message', role => 'assistant', model => 'claude',
                content => [$part], stop_reason => $end // 'end_turn' }
            : { id => 'resp_1', object => 'response', status => $end // 'completed',
                ($end ? (incomplete_details => { reason => 'max_output_tokens' }) : ()),
                output => [{ type => 'message', role => 'assistant', content => [$part] }] };
        return $row;
    }

    my @apis = (answered_in('messages', "so it is 4.\n#### 4", 1, 1),
                answered_in('messages', "#### 7", 0, 1, 'max_tokens'),
                answered_in('messages', "it could be 5, I am not sure", 0, 1),
                answered_in('responses', "#### 9", 1, 1),
                answered_in('responses', "#### 3", 0, 1, 'incomplete'),
                answered_in('responses', "the total is", 0, 1));
    my $apis = write_file("$dir/cascade-apis.jsonl", jsonl(@apis));

    $r = run('cascade', '--json', $apis);
    is $r->{code}, 0, 'cascade, APIs: exit 0' or diag $r->{err};
    $c = eval { json_decode($r->{out}) } // {};
    is_deeply [$c->{rows}, sprintf('%.0f', $c->{rows} * $c->{strong_share})], [6, 2],
        'cascade, APIs: a Messages max_tokens and a Responses incomplete answer escalate, no other';

    $r = run('cascade', '--json', '--require', '####[[:space:]]*-?[0-9]', '--pattern', 'NOT SURE', $apis);
    $c = eval { json_decode($r->{out}) } // {};
    is_deeply [sprintf('%.0f', $c->{rows} * $c->{strong_share}), $c->{quality}, $c->{pgr}], [4, 1, 1],
        'cascade, APIs: the patterns on the text of a message and of a response';

    my $bare = write_file("$dir/cascade-bare.jsonl", jsonl(without_api(@apis[0 .. 2])));
    $r = run('cascade', '--json', '--api', 'messages', $bare);
    $c = eval { json_decode($r->{out}) } // {};
    is sprintf('%.0f', $c->{rows} * $c->{strong_share}), 1, 'cascade, APIs: --api for lines without "api"';
    $r = run('cascade', '--json', $bare);
    $c = eval { json_decode($r->{out}) } // {};
    is sprintf('%.0f', $c->{rows} * $c->{strong_share}), 3,
        'cascade, APIs: a message read as a chat.completion is empty';

    $r = run('cascade', '--pattern', '(', $data);
    ok $r->{code} == 1 && $r->{err} =~ /^llm-router: cascade: invalid pattern "\(": /,
       'cascade: an invalid pattern is reported';
}

done_testing;
