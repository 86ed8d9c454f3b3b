var p = createSprite(200, 200);

function draw() {
  background("white");
  if (keyDown("UP") && keyDown("DOWN")) {
    p.y = p.y - 5;
  }
  drawSprites();
}
