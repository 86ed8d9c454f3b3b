var frog = createSprite(200, 380);
frog.setAnimation("frog");
frog.scale = 0.5;

function draw() {
  background("lightgreen");
  if (keyDown("up")) {
    frog.y = frog.y - 3;
  }
  if (keyDown("down")) {
    frog.y = frog.y + 3;
  }
  drawSprites();
}
